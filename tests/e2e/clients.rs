//! The clients researchers use, against a real session: rsync, git, Ansible, pip and venv, an
//! interactive terminal, and what VS Code's Remote-SSH needs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, BIN, Env, ssh_command, ssh_command_line, stderr, stdout};

fn assert_ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed ({}):\n{}\n{}", out.status, stdout(out), stderr(out));
}

#[test]
fn rsync_both_ways_and_git_clone_over_ssh() {
    let env = Env::new("clients-rsync-git");
    let s = env.create("rita", &[]);
    let kh = env.known_hosts(&s);
    let rsh = format!("{} -p {}", ssh_command_line(&s.key, &kh), s.port());
    let remote = |p: &str| format!("rita@127.0.0.1:{p}");

    // Up: a tree with a nested file, a symlink and a mode.
    let up = env.path("up");
    std::fs::create_dir_all(up.join("nested")).unwrap();
    std::fs::write(up.join("nested/data.txt"), "from the host\n").unwrap();
    std::os::unix::fs::symlink("nested/data.txt", up.join("link")).unwrap();
    std::fs::write(up.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(up.join("run.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rsync = |from: &str, to: &str| {
        Command::new("rsync").args(["-a", "-e", &rsh, from, to]).stdin(Stdio::null()).output().unwrap()
    };
    assert_ok("rsync up", &rsync(&format!("{}/", up.display()), &remote("projects/up/")));
    let out = env.ssh(&s, "cat ~/projects/up/link; ~/projects/up/run.sh; readlink ~/projects/up/link");
    assert_eq!(stdout(&out), "from the host\nran\nnested/data.txt\n", "{}", stderr(&out));

    // Down: files made inside come back, and a second run copies nothing.
    assert_ok("make files", &env.ssh(&s, "mkdir -p ~/results && seq 1 1000 > ~/results/numbers.txt"));
    let down = env.path("down");
    assert_ok("rsync down", &rsync(&remote("results/"), &format!("{}/", down.display())));
    let numbers = std::fs::read_to_string(down.join("numbers.txt")).unwrap();
    assert_eq!(numbers.lines().count(), 1000);
    let again = Command::new("rsync")
        .args(["-a", "--itemize-changes", "-e", &rsh, &remote("results/"), &format!("{}/", down.display())])
        .output()
        .unwrap();
    assert_ok("rsync down again", &again);
    assert_eq!(stdout(&again), "", "nothing changed, nothing copied");

    // git: a bare repository in the home, cloned, changed and pushed back over ssh.
    let make_repo = "set -e; git init -q -b main ~/src; cd ~/src; echo v1 > README; git add README; \
                     git -c user.name=rita -c user.email=rita@example.org commit -q -m first; \
                     git clone -q --bare ~/src ~/repo.git";
    assert_ok("make a bare repository", &env.ssh(&s, make_repo));
    let git = |args: &[&str], dir: &Path| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", ssh_command_line(&s.key, &kh))
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let url = format!("ssh://rita@127.0.0.1:{}/~/repo.git", s.port());
    assert_ok("git clone", &git(&["clone", "-q", &url, "clone"], env.dir.path()));
    let clone = env.path("clone");
    assert_eq!(std::fs::read_to_string(clone.join("README")).unwrap(), "v1\n");
    std::fs::write(clone.join("README"), "v2\n").unwrap();
    assert_ok(
        "git commit",
        &git(&["-c", "user.name=host", "-c", "user.email=host@example.org", "commit", "-q", "-am", "second"], &clone),
    );
    assert_ok("git push", &git(&["push", "-q", "origin", "main"], &clone));
    let log = env.ssh(&s, "git --git-dir ~/repo.git log --format=%s main");
    assert_eq!(stdout(&log), "second\nfirst\n", "{}", stderr(&log));
}

/// ansible-core from PyPI, in a virtual environment that scripts/test.sh prepares.
fn ansible_bin(name: &str) -> PathBuf {
    // The binary is <target>/debug/sandman; the venv is <target>/ansible-venv.
    let target = Path::new(BIN).parent().and_then(Path::parent).unwrap();
    let bin = target.join("ansible-venv/bin").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: scripts/test.sh installs ansible-core into {} before the suite",
        bin.display(),
        target.join("ansible-venv").display()
    );
    bin
}

#[test]
fn ansible_ping_setup_copy_and_shell() {
    let env = Env::new("clients-ansible");
    let s = env.create("ansel", &[]);
    let kh = env.known_hosts(&s);
    let inventory = env.path("inventory.ini");
    std::fs::write(
        &inventory,
        format!(
            "[sessions]\nworkspace ansible_host=127.0.0.1 ansible_port={} ansible_user=ansel \
             ansible_ssh_private_key_file={} ansible_python_interpreter=auto_silent \
             ansible_ssh_common_args='-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'\n",
            s.port(),
            s.key.display(),
            kh.display()
        ),
    )
    .unwrap();
    let ansible = |module: &str, args: Option<&str>| {
        let mut c = Command::new(ansible_bin("ansible"));
        c.arg("workspace").arg("-i").arg(&inventory).args(["-m", module]);
        if let Some(a) = args {
            c.args(["-a", a]);
        }
        // Ansible insists on a UTF-8 locale; keep its state inside this test's directory.
        c.current_dir(env.dir.path())
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("ANSIBLE_HOME", env.path("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", env.path("ansible-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let ping = ansible("ping", None);
    assert_ok("ansible -m ping", &ping);
    assert!(stdout(&ping).contains("\"ping\": \"pong\""), "{}", stdout(&ping));

    let setup = ansible("setup", Some("gather_subset=min"));
    assert_ok("ansible -m setup", &setup);
    let facts = stdout(&setup);
    assert!(facts.contains("\"ansible_user_id\": \"ansel\""), "{facts}");
    assert!(facts.contains("\"ansible_python_version\": \"3."), "{facts}");

    let local = env.path("to-copy.txt");
    std::fs::write(&local, "copied by ansible: h\u{e9}llo\n").unwrap();
    let copy = ansible("copy", Some(&format!("src={} dest=/home/ansel/data/copied.txt mode=0640", local.display())));
    assert_ok("ansible -m copy", &copy);
    assert!(stdout(&copy).contains("CHANGED"), "{}", stdout(&copy));
    let copied = env.workspace_root().join("ansel/data/copied.txt");
    assert_eq!(std::fs::read_to_string(&copied).unwrap(), "copied by ansible: h\u{e9}llo\n");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copied).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);

    let shell = ansible("shell", Some("echo \"$LANG $(whoami) $(wc -l < ~/data/copied.txt)\""));
    assert_ok("ansible -m shell", &shell);
    assert!(stdout(&shell).contains("C.UTF-8 ansel 1"), "{}", stdout(&shell));
}

#[test]
fn a_venv_takes_a_wheel_built_locally_and_pip_user_is_explained() {
    let env = Env::new("clients-pip");
    let s = env.create("pia", &[]);
    // A wheel made with the standard library alone (nothing to download), then installed into
    // a venv with pip, offline, and its console script run.
    let build_and_install = r#"set -e
mkdir -p ~/wheelsrc && cd ~/wheelsrc
python3 - <<'PY'
import base64, hashlib, zipfile
files = {
    "hello_sandman/__init__.py": "def main():\n    print('hello from a local wheel')\n",
    "hello_sandman-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-sandman\nVersion: 1.0\n",
    "hello_sandman-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "hello_sandman-1.0.dist-info/entry_points.txt": "[console_scripts]\nhello-sandman = hello_sandman:main\n",
}
record = []
with zipfile.ZipFile("hello_sandman-1.0-py3-none-any.whl", "w") as whl:
    for name, text in files.items():
        data = text.encode()
        whl.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("hello_sandman-1.0.dist-info/RECORD,,")
    whl.writestr("hello_sandman-1.0.dist-info/RECORD", "\n".join(record) + "\n")
PY
python3 -m venv ~/venv
~/venv/bin/pip install --quiet --no-index --disable-pip-version-check ./hello_sandman-1.0-py3-none-any.whl
~/venv/bin/hello-sandman
"#;
    let out = env.ssh(&s, build_and_install);
    assert_ok("venv and pip install", &out);
    assert!(stdout(&out).ends_with("hello from a local wheel\n"), "{}", stdout(&out));

    // `pip install --user` meets Debian's PEP 668 marker, as the README explains; the way out it
    // names (--break-system-packages, into ~/.local) works, and ~/.local/bin is on PATH.
    let user = env.ssh(&s, "cd ~/wheelsrc && pip install --user --no-index ./hello_sandman-1.0-py3-none-any.whl");
    assert!(!user.status.success() && stderr(&user).contains("externally-managed-environment"), "{}", stderr(&user));
    let user = env.ssh(
        &s,
        "cd ~/wheelsrc && pip install --quiet --user --break-system-packages --no-index ./hello_sandman-1.0-py3-none-any.whl \
         && bash -lc hello-sandman && hello-sandman",
    );
    assert_ok("pip install --user --break-system-packages", &user);
    assert_eq!(stdout(&user), "hello from a local wheel\nhello from a local wheel\n");
}

#[test]
fn an_interactive_login_reads_the_profile_and_keeps_utf8() {
    let env = Env::new("clients-tmux");
    let s = env.create("tina", &[]);
    let kh = env.known_hosts(&s);
    let socket = env.path("tmux.sock");
    let tmux = |args: &[&str]| harness::tmux(&socket, args);
    let login = format!("{} -tt -p {} tina@127.0.0.1", ssh_command_line(&s.key, &kh), s.port());
    assert_ok("tmux new-session", &tmux(&["new-session", "-d", "-s", "login", "-x", "150", "-y", "40", &login]));
    let screen = || stdout(&tmux(&["capture-pane", "-p", "-t", "login"]));
    let wait_for = |what: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        loop {
            let text = screen();
            if what(&text) {
                return text;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = tmux(&["kill-server"]);
                panic!("the terminal never showed what was expected; it shows:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let typed = |keys: &str| {
        assert_ok("send-keys", &tmux(&["send-keys", "-t", "login", "-l", keys]));
        assert_ok("send-keys Enter", &tmux(&["send-keys", "-t", "login", "Enter"]));
    };

    // The prompt from the seeded ~/.bashrc, read through the seeded ~/.profile.
    wait_for(&|t| t.contains("tina@sandman:~$"));
    typed("type ll; echo \"lang=$LANG\"");
    wait_for(&|t| t.contains("ll is aliased to `ls -alF'") && t.contains("lang=C.UTF-8"));
    typed("echo h\u{e9}llo > typed.txt; cat typed.txt");
    let text = wait_for(&|t| t.lines().any(|l| l.trim_end() == "h\u{e9}llo"));
    assert!(!text.contains("\\303"), "escaped instead of shown: {text}");
    assert_ok("kill-server", &tmux(&["kill-server"]));
    // What was typed reached the file as the same bytes.
    let saved = std::fs::read(env.workspace_root().join("tina/typed.txt")).unwrap();
    assert_eq!(saved, "h\u{e9}llo\n".as_bytes());
}

#[test]
fn vscode_remote_ssh_prerequisites() {
    let env = Env::new("clients-vscode");
    let s = env.create("vera", &[]);
    let kh = env.known_hosts(&s);
    // Its server installer downloads with curl or wget, unpacks with tar into ~/.vscode-server.
    let check = "set -e; command -v curl; command -v wget; tar --version | head -n1; \
                 mkdir -p ~/.vscode-server/bin/abc && echo ok > ~/.vscode-server/bin/abc/probe && \
                 tar -czf - -C ~/.vscode-server bin | tar -tzf - | sort";
    let out = env.ssh(&s, check);
    assert_ok("VS Code's checks", &out);
    let text = stdout(&out);
    assert!(text.contains("/usr/bin/curl") && text.contains("/usr/bin/wget") && text.contains("GNU tar"), "{text}");
    assert!(text.contains("bin/abc/probe"), "{text}");

    // Then it talks to its server through a forwarded TCP port.
    let local_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut tunnel = ssh_command(&s, &kh)
        .args(["-o", "ExitOnForwardFailure=yes", "-L", &format!("127.0.0.1:{local_port}:127.0.0.1:8765")])
        .arg("exec python3 -m http.server 8765 --bind 127.0.0.1 --directory ~/.vscode-server/bin/abc")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let answer = http_get_until_answered(local_port, "/probe", Duration::from_secs(20));
    tunnel.kill().unwrap();
    let _ = tunnel.wait();
    assert!(answer.starts_with("HTTP/1.0 200") && answer.ends_with("\r\n\r\nok\n"), "through the tunnel: {answer:?}");
}

fn http_get_until_answered(port: u16, path: &str, timeout: Duration) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes());
            let mut answer = String::new();
            let _ = c.read_to_string(&mut answer);
            if answer.starts_with("HTTP/") {
                return answer;
            }
            last = answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    last
}
