# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sandman_global_optspecs
    string join \n config= db= workspace-root= ssh-port-start= ssh-port-end= gpu-backend= gpu-sim-file= idle-timeout-minutes= activity-bump-minutes= cpu-active-percent= protect-busy-gpu= engine= v/verbose q/quiet h/help V/version
end

function __fish_sandman_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sandman_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sandman_using_subcommand
    set -l cmd (__fish_sandman_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sandman -n "__fish_sandman_needs_command" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_needs_command" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_needs_command" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_needs_command" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_needs_command" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_needs_command" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_needs_command" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_needs_command" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_needs_command" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_needs_command" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_needs_command" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_needs_command" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_needs_command" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_needs_command" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_needs_command" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_needs_command" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "session" -d 'Create, list, show, extend and remove sessions'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "user" -d 'Manage users\' own SSH public keys, which every session of theirs accepts'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "gpu" -d 'List GPUs, MIG profiles and free MIG devices'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "reap" -d 'Remove expired sessions and whatever a crash left behind'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "serve" -d 'Serve the HTTP API (sessions, GPUs, metrics) and reap expired sessions every minute'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "image" -d 'Build the workspace image'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "doctor" -d 'Check that this host can run sessions, with the fix for each problem'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "firewall" -d 'Show, apply or remove the firewall rules that keep sessions away from the host'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "node" -d 'Swarm nodes: record this node\'s GPUs for the manager\'s placement'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "man" -d 'Write the man pages (sandman.1 and one per subcommand)'
complete -c sandman -n "__fish_sandman_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -f -a "create" -d 'Start a session for a user and print how to log in'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -f -a "list" -d 'List sessions'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -f -a "show" -d 'Show one session'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -f -a "extend" -d 'Set a session to expire TTL minutes from now'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -f -a "ssh-config" -d 'Print an OpenSSH client Host block for a session, and its known_hosts line'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -f -a "rm" -d 'Remove sessions; their workspaces are kept'
complete -c sandman -n "__fish_sandman_using_subcommand session; and not __fish_seen_subcommand_from create list show extend ssh-config rm help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l user -d 'Login name: lowercase letters, digits, \'_\' and \'-\', at most 32, not a system account' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l ttl -d 'Minutes until the session is reaped [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l profile -d 'MIG profile, exact (3g.20gb) or a size on whatever model is present (3g) [default: 3g.20gb]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l gpu -d 'One exact device: a MIG instance UUID (MIG-…) or a whole GPU without MIG (GPU-…)' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l image -d 'Workspace image [default: gpu-workspace]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l public-key -d 'Use this OpenSSH public key instead of generating a key pair; it joins the user\'s keys' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l key-file -d 'Write the generated private key to FILE (mode 0600) instead of printing it' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l memory -d 'Memory limit, swap included (512m, 16g, 1.5g) [default: [limits] memory, else a quarter of the host\'s RAM]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l cpus -d 'CPUs (fractions allowed: 1.5) [default: [limits] cpus, else half the host\'s CPUs]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l shm-size -d 'Size of /dev/shm, counted in the memory limit [default: [limits] shm_size, else half the memory, at most 8g]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l writable-layer -d 'Size limit of the container\'s writable layer (needs a storage driver that enforces it) [default: [limits] writable_layer, else none]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l idle-timeout -d 'Reap the session after this many minutes without activity (at most the host\'s idle_timeout_minutes)' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l adopt-workspace -d 'Give a new user the existing directory <workspace_root>/<user> even though another uid owns it'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -l json -d 'Print the API\'s create answer as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -l json -d 'Print the API\'s session objects as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -l json -d 'Print the API\'s session object as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l ttl -d 'Minutes from now' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -l json
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from extend" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l user -d 'The session of this user' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l identity-file -d 'The private key to log in with, for the IdentityFile line' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -l json -d 'Print {ssh_config, ssh_config_known_hosts} as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from ssh-config" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l all -d 'Remove every session'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -s y -l yes -d 'Do not ask for confirmation'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -l json
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "create" -d 'Start a session for a user and print how to log in'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "list" -d 'List sessions'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one session'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "extend" -d 'Set a session to expire TTL minutes from now'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "ssh-config" -d 'Print an OpenSSH client Host block for a session, and its known_hosts line'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Remove sessions; their workspaces are kept'
complete -c sandman -n "__fish_sandman_using_subcommand session; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -f -a "key" -d 'A user\'s SSH public keys'
complete -c sandman -n "__fish_sandman_using_subcommand user; and not __fish_seen_subcommand_from key help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -f -a "add" -d 'Let a key log in as the user, in the running session (at once) and every later one'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -f -a "rm" -d 'Revoke a key: new logins with it fail at once, in the running session too'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -f -a "ls" -d 'List a user\'s keys'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from key" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "key" -d 'A user\'s SSH public keys'
complete -c sandman -n "__fish_sandman_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -f -a "ls" -d 'Every GPU with its MIG devices and which session holds them'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -f -a "profiles" -d 'MIG profiles of the GPU models present'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -f -a "available" -d 'MIG devices no session holds'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -f -a "sim-busy" -d 'Simulated GPUs only (a testing aid): set how many compute processes a device runs, as NVML would report them; idle detection counts them like real ones'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and not __fish_seen_subcommand_from ls profiles available sim-busy help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -l json -d 'Print the API\'s `GET /gpus` answer'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -l json -d 'Print the API\'s `GET /gpus/profiles` answer'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from profiles" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -l json -d 'Print the API\'s `GET /gpus/available` answer'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from available" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l device -d 'A MIG device or GPU UUID of the simulated backend' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l processes -d 'Compute processes running on it (0: idle)' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from sim-busy" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from help" -f -a "ls" -d 'Every GPU with its MIG devices and which session holds them'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from help" -f -a "profiles" -d 'MIG profiles of the GPU models present'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from help" -f -a "available" -d 'MIG devices no session holds'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from help" -f -a "sim-busy" -d 'Simulated GPUs only (a testing aid): set how many compute processes a device runs, as NVML would report them; idle detection counts them like real ones'
complete -c sandman -n "__fish_sandman_using_subcommand gpu; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l dry-run -d 'Report what would be removed, remove nothing'
complete -c sandman -n "__fish_sandman_using_subcommand reap" -l json -d 'Print the report as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand reap" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand reap" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand reap" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand reap" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l port -d 'TCP port to listen on [default: 8080]' -r
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l bind -d 'Address to listen on [default: 0.0.0.0]' -r
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l token-file -d 'File of accepted bearer tokens [default: /etc/sandman/api-tokens]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand serve" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand serve" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand serve" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand serve" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand serve" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -f -a "build" -d 'Build the workspace image from images/Dockerfile.gpu-workspace'
complete -c sandman -n "__fish_sandman_using_subcommand image; and not __fish_seen_subcommand_from build help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l base-image -d 'Base image (ignored with --offline)' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l tag -d 'Name of the image to build' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l flavor -d 'full: sshd and the research toolset; minimal: sshd only' -r -f -a "full\t'sshd and the research toolset'
minimal\t'sshd only'"
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l packages -d 'More Debian packages, separated by spaces or commas (repeatable)' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l ca-cert -d 'A site CA certificate (PEM) to add to the image\'s trust store (repeatable)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l offline -d 'Make the base with debootstrap from this host\'s apt sources, then build on it'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l rebuild-base -d 'Rebuild the offline base even if it exists'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -l print-digest -d 'Print the digest of these build inputs (the image\'s sandman.image.digest label) and build nothing'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from build" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "build" -d 'Build the workspace image from images/Dockerfile.gpu-workspace'
complete -c sandman -n "__fish_sandman_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l json -d 'Print the checks as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -l adopt-database -d 'Make the database file (--db) this host\'s database: one copied, moved or restored from a backup, or a new one beside another instance\'s containers. Only when the original is no longer used'
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -f -a "show" -d 'sandman\'s rules for the session network, as they are and as the settings want them'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -f -a "apply" -d 'Install or update the rules now (session create does it too); with the policy off, remove them'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -f -a "remove" -d 'Remove every rule sandman made for the session network (also once the network is gone)'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and not __fish_seen_subcommand_from show apply remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -l json -d 'Print the state as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -l json -d 'Print the resulting state as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from apply" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -l json -d 'Print what was done as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from help" -f -a "show" -d 'sandman\'s rules for the session network, as they are and as the settings want them'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from help" -f -a "apply" -d 'Install or update the rules now (session create does it too); with the policy off, remove them'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove every rule sandman made for the session network (also once the network is gone)'
complete -c sandman -n "__fish_sandman_using_subcommand firewall; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -f -a "register" -d 'Record this swarm node\'s GPUs and MIG devices (from the GPU backend) as node labels, and create its session network\'s local part; run on every node, again after GPU changes'
complete -c sandman -n "__fish_sandman_using_subcommand node; and not __fish_seen_subcommand_from register help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -l json -d 'Print what was recorded as JSON'
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from register" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from help" -f -a "register" -d 'Record this swarm node\'s GPUs and MIG devices (from the GPU backend) as node labels, and create its session network\'s local part; run on every node, again after GPU changes'
complete -c sandman -n "__fish_sandman_using_subcommand node; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand completions" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand completions" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand completions" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand completions" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand completions" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand man" -l dir -d 'Directory to write into' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand man" -l config -d 'Config file [default: /etc/sandman/config.toml, or $SANDMAN_CONFIG]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand man" -l db -d 'SQLite database holding sessions, users and ports [default: /var/lib/sandman/sandman.db]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand man" -l workspace-root -d 'Directory holding each user\'s persistent home [default: /srv/workspaces]' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand man" -l ssh-port-start -d 'First host port for session SSH [default: 10000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand man" -l ssh-port-end -d 'Last host port for session SSH [default: 20000]' -r
complete -c sandman -n "__fish_sandman_using_subcommand man" -l gpu-backend -d 'GPU backend: auto (NVML when the driver library loads, else none), nvml, sim, none' -r -f -a "auto\t''
nvml\t''
sim\t''
none\t''"
complete -c sandman -n "__fish_sandman_using_subcommand man" -l gpu-sim-file -d 'TOML file describing simulated GPUs (with --gpu-backend sim)' -r -F
complete -c sandman -n "__fish_sandman_using_subcommand man" -l idle-timeout-minutes -d 'Minutes without activity after which a session is reaped; 0: never [default: 120]' -r
complete -c sandman -n "__fish_sandman_using_subcommand man" -l activity-bump-minutes -d 'Activity moves a session\'s expiry to at least this many minutes from now; 0: off [default: 60]' -r
complete -c sandman -n "__fish_sandman_using_subcommand man" -l cpu-active-percent -d 'CPU share (percent of one CPU) between reap passes that counts as activity; 0: never [default: 10]' -r
complete -c sandman -n "__fish_sandman_using_subcommand man" -l protect-busy-gpu -d 'Whether GPU compute processes count as activity, so a busy session is never reaped for idleness [default: true]' -r -f -a "true\t''
false\t''"
complete -c sandman -n "__fish_sandman_using_subcommand man" -l engine -d 'Container engine: docker (this host) or swarm (a Docker Swarm, from a manager) [default: docker]' -r -f -a "docker\t''
swarm\t''"
complete -c sandman -n "__fish_sandman_using_subcommand man" -s v -l verbose -d 'More log output (-v info, -vv debug); SANDMAN_LOG overrides'
complete -c sandman -n "__fish_sandman_using_subcommand man" -s q -l quiet -d 'Only errors on stderr; no progress'
complete -c sandman -n "__fish_sandman_using_subcommand man" -s h -l help -d 'Print help'
complete -c sandman -n "__fish_sandman_using_subcommand man" -s V -l version -d 'Print version'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "session" -d 'Create, list, show, extend and remove sessions'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "user" -d 'Manage users\' own SSH public keys, which every session of theirs accepts'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "gpu" -d 'List GPUs, MIG profiles and free MIG devices'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "reap" -d 'Remove expired sessions and whatever a crash left behind'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "serve" -d 'Serve the HTTP API (sessions, GPUs, metrics) and reap expired sessions every minute'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "image" -d 'Build the workspace image'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "doctor" -d 'Check that this host can run sessions, with the fix for each problem'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "firewall" -d 'Show, apply or remove the firewall rules that keep sessions away from the host'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "node" -d 'Swarm nodes: record this node\'s GPUs for the manager\'s placement'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "completions" -d 'Print a shell completion script'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "man" -d 'Write the man pages (sandman.1 and one per subcommand)'
complete -c sandman -n "__fish_sandman_using_subcommand help; and not __fish_seen_subcommand_from session user gpu reap serve image doctor firewall node completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "create" -d 'Start a session for a user and print how to log in'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "list" -d 'List sessions'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "show" -d 'Show one session'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "extend" -d 'Set a session to expire TTL minutes from now'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "ssh-config" -d 'Print an OpenSSH client Host block for a session, and its known_hosts line'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from session" -f -a "rm" -d 'Remove sessions; their workspaces are kept'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "key" -d 'A user\'s SSH public keys'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from gpu" -f -a "ls" -d 'Every GPU with its MIG devices and which session holds them'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from gpu" -f -a "profiles" -d 'MIG profiles of the GPU models present'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from gpu" -f -a "available" -d 'MIG devices no session holds'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from gpu" -f -a "sim-busy" -d 'Simulated GPUs only (a testing aid): set how many compute processes a device runs, as NVML would report them; idle detection counts them like real ones'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "build" -d 'Build the workspace image from images/Dockerfile.gpu-workspace'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from firewall" -f -a "show" -d 'sandman\'s rules for the session network, as they are and as the settings want them'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from firewall" -f -a "apply" -d 'Install or update the rules now (session create does it too); with the policy off, remove them'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from firewall" -f -a "remove" -d 'Remove every rule sandman made for the session network (also once the network is gone)'
complete -c sandman -n "__fish_sandman_using_subcommand help; and __fish_seen_subcommand_from node" -f -a "register" -d 'Record this swarm node\'s GPUs and MIG devices (from the GPU backend) as node labels, and create its session network\'s local part; run on every node, again after GPU changes'
