//! The core on the in-memory engine and the simulated GPUs: every failure path of a create, the
//! reaper's rules, and the races the store settles.

use std::path::PathBuf;
use std::sync::Barrier;

use super::*;
use crate::config::{GpuBackendKind, MigMode};
use crate::engine::ManagedContainer;
use crate::engine::fake::{FakeEngine, Op};

#[test]
fn passwd_entry_replaces_a_clash() {
    let file = b"root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nalicex:x:1:1::/:/bin/sh";
    let out = String::from_utf8(with_entry(file, "alice", "alice:x:20000:20000::/home/alice:/bin/bash\n")).unwrap();
    assert_eq!(
        out,
        "root:x:0:0::/root:/bin/bash\nalicex:x:1:1::/:/bin/sh\nalice:x:20000:20000::/home/alice:/bin/bash\n"
    );
}

/// A private sandman: its own database, workspaces, simulated GPUs (dynamic MIG, so a held slice
/// is an instance that exists) and fake engine.
struct Lab {
    _dir: tempfile::TempDir,
    settings: Settings,
    engine: Arc<FakeEngine>,
    sessions: Arc<Sessions>,
    /// The firewall of `sessions` (other services of the lab have their own).
    firewall: Arc<firewall::Memory>,
}

const SIM_GPUS: &str = "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-40GB\"\nmig = true\ninstances = []\n";

impl Lab {
    fn new() -> Lab {
        Lab::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut Settings)) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let sim_file = dir.path().join("gpus.toml");
        std::fs::write(&sim_file, SIM_GPUS).unwrap();
        // Ports of its own, so labs running side by side rarely meet; a port some other program
        // holds is skipped by the reservation anyway.
        let start = 20000 + (rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 40000) as u16;
        let mut settings = Settings {
            db: dir.path().join("state").join("sandman.db"),
            workspace_root: dir.path().join("workspaces"),
            ssh_port_start: start,
            ssh_port_end: start + 63,
            ssh_host: "gpu-host".into(),
            publish_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ssh_ready_timeout_secs: 1,
            gpu_backend: GpuBackendKind::Sim,
            gpu_sim_file: Some(sim_file),
            mig_mode: MigMode::Dynamic,
            default_profile: "1g.5gb".into(),
            ..Settings::default()
        };
        adjust(&mut settings);
        let engine = Arc::new(FakeEngine::with_images(&[&settings.image]));
        let firewall = Arc::new(firewall::Memory::new());
        let sessions = Arc::new(Lab::service(&settings, &engine).with_firewall(firewall.clone()));
        Lab { _dir: dir, settings, engine, sessions, firewall }
    }

    /// Another process on the same host: its own connection to the database, the same engine.
    fn service(settings: &Settings, engine: &Arc<FakeEngine>) -> Sessions {
        let gpu = crate::gpu::open(settings).unwrap();
        Sessions::with_engine(settings.clone(), gpu, engine.clone()).unwrap()
    }

    async fn create(&self, user: &str) -> Result<Created> {
        self.create_with(request(user), &CancellationToken::new()).await
    }

    async fn create_with(&self, req: CreateRequest, cancel: &CancellationToken) -> Result<Created> {
        self.sessions.create(req, &|_: &str| {}, cancel).await
    }

    /// MIG instances that exist (in dynamic mode, only those sessions made and hold).
    fn gpu_instances(&self) -> Vec<String> {
        let gpus = self.sessions.gpu().devices().unwrap();
        gpus.into_iter().flat_map(|g| g.mig_instances).map(|m| m.uuid).collect()
    }

    fn session_lock_files(&self) -> Vec<PathBuf> {
        let dir = locks::dir(&self.settings.state_dir());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("session-")))
            .collect()
    }

    /// Nothing a create makes is left: no row, no MIG instance, no container, no lock file.
    fn assert_nothing_left(&self, after: &str) {
        assert_eq!(self.sessions.list().unwrap().len(), 0, "{after}: a session row is left");
        assert_eq!(self.gpu_instances(), Vec::<String>::new(), "{after}: a MIG instance is left");
        let containers: Vec<String> = self.engine.containers().into_iter().map(|c| c.name).collect();
        assert_eq!(containers, Vec::<String>::new(), "{after}: a container is left");
        assert_eq!(self.session_lock_files(), Vec::<PathBuf>::new(), "{after}: a lock file is left");
    }

    /// Runs a statement on the database, as another process would (time travel).
    fn sql(&self, statement: &str) {
        rusqlite::Connection::open(&self.settings.db).unwrap().execute_batch(statement).unwrap();
    }

    /// Makes a session expired as of now.
    fn expire(&self, id: &str) {
        let past = chrono::Utc::now().timestamp() - 1;
        assert!(self.sessions.store().set_ttl(id, 1, past).unwrap());
    }
}

fn request(user: &str) -> CreateRequest {
    CreateRequest {
        user: user.into(),
        ttl_minutes: None,
        image: None,
        gpu: GpuRequest::Default,
        public_key: None,
        limits: LimitRequest::default(),
        adopt_workspace: false,
        idle_timeout_minutes: None,
    }
}

fn unavailable(what: &'static str) -> impl FnOnce() -> Error + Send + 'static {
    move || Error::Unavailable(format!("injected: {what}"))
}

#[tokio::test]
async fn a_create_runs_every_step_and_leaves_only_its_session() {
    let lab = Lab::new();
    let created = lab.create("alice").await.unwrap();
    let s = &created.session;
    assert_eq!(s.state, State::Running);
    assert!(s.mig_profile.as_deref() == Some("1g.5gb"), "{:?}", s.mig_profile);
    assert_eq!(lab.gpu_instances(), vec![s.gpu_uuid.clone().unwrap()]);
    let container = lab.engine.container(s.container_id.as_deref().unwrap()).unwrap();
    assert!(container.running);
    assert_eq!(container.labels[engine::LABEL_SESSION], s.id);
    let keys = String::from_utf8(container.files[&format!("{}/authorized_keys", ssh::CONFIG_DIR)].clone()).unwrap();
    assert!(keys.starts_with("ssh-ed25519 "), "{keys}");
    assert!(String::from_utf8_lossy(&container.files["etc/passwd"]).contains("alice:x:20000:20000:"));
    assert!(created.private_key.is_some());
    assert_eq!(lab.engine.networks(), vec![lab.settings.network.clone()], "made on first use");
    assert_eq!(lab.session_lock_files(), Vec::<PathBuf>::new());
    assert_eq!(lab.sessions.get(&s.id).unwrap().state, State::Running);
}

#[tokio::test]
async fn a_create_installs_the_egress_rules_once_and_is_refused_without_them() {
    use crate::firewall::{Listing, Runner};
    let lab = Lab::new();
    lab.create("alice").await.unwrap();
    let rules = lab.firewall.list().unwrap();
    let current = Listing::parse(&rules).current(&lab.settings.network);
    // Two jumps; INPUT: replies, 169.254.0.0/16, the host; DOCKER-USER: replies, 169.254.0.0/16.
    assert_eq!(current.len(), 7, "{current:#?}");
    assert!(
        current[0].starts_with("-A INPUT -i br-") && current[0].contains(&format!("sandman:{}", lab.settings.network))
    );
    lab.create("bob").await.unwrap();
    assert_eq!(lab.firewall.list().unwrap(), rules, "a second create changes nothing");
    assert!(lab.sessions.firewall_status().await.unwrap().up_to_date);
    // Removed behind sandman's back (a host firewall reload): a reaper pass puts them back.
    assert!(lab.sessions.firewall_remove().await.unwrap());
    assert!(!lab.sessions.firewall_status().await.unwrap().up_to_date);
    lab.sessions.reap(true).await.unwrap();
    assert!(!lab.sessions.firewall_status().await.unwrap().up_to_date, "a dry run changes nothing");
    lab.sessions.reap(false).await.unwrap();
    assert_eq!(lab.firewall.list().unwrap(), rules);
    assert!(lab.sessions.firewall_remove().await.unwrap());
    assert!(Listing::parse(&lab.firewall.list().unwrap()).current(&lab.settings.network).is_empty());

    // No iptables (or no root): the create is refused with the cause and the fixes, nothing made.
    let lab = Lab::new();
    *lab.firewall.fail.lock().unwrap() =
        Some("iptables is not installed: install it (apt-get install iptables)".into());
    let e = lab.create("alice").await.err().expect("the create succeeded");
    assert!(
        matches!(&e, Error::Unavailable(m) if m.contains("iptables is not installed")
            && m.contains("block_host = false and blocked_cidrs = []")),
        "{e}"
    );
    lab.assert_nothing_left("a create whose firewall rules could not be installed");

    // With the policy off, iptables is not needed.
    let lab = Lab::with(|s| {
        s.block_host = false;
        s.blocked_cidrs.clear();
    });
    *lab.firewall.fail.lock().unwrap() = Some("iptables is not installed".into());
    lab.create("alice").await.unwrap();
}

#[tokio::test]
async fn a_create_failing_at_any_step_leaves_nothing() {
    // Reserve: a device that does not exist.
    let lab = Lab::new();
    let req = CreateRequest { gpu: GpuRequest::Uuid("MIG-no-such-device".into()), ..request("alice") };
    assert!(lab.create_with(req, &CancellationToken::new()).await.is_err());
    lab.assert_nothing_left("a failed reservation");

    // Workspace: a file where the workspace root should be.
    let lab = Lab::with(|s| s.workspace_root = PathBuf::from("/dev/null/workspaces"));
    let e = lab.create("alice").await.err().expect("the create succeeded");
    assert!(matches!(&e, Error::Unavailable(m) if m.contains("workspace root")), "{e}");
    lab.assert_nothing_left("a failed workspace");

    // Engine steps.
    for (op, step) in [(Op::Create, "create"), (Op::Start, "start"), (Op::WriteFiles, "write files")] {
        let lab = Lab::new();
        lab.engine.fail_next(op, unavailable(step));
        let e = lab.create("alice").await.err().expect("the create succeeded");
        assert!(e.to_string().contains(&format!("injected: {step}")), "{step}: {e}");
        lab.assert_nothing_left(step);
    }

    // sshd never answers.
    let lab = Lab::new();
    lab.engine.silence_sshd();
    let e = lab.create("alice").await.err().expect("the create succeeded");
    assert!(matches!(&e, Error::Unavailable(m) if m.contains("sshd did not answer")), "{e}");
    lab.assert_nothing_left("no SSH banner");

    // Cancelled (Ctrl-C).
    let lab = Lab::new();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let e = lab.create_with(request("alice"), &cancel).await.err().expect("the create succeeded");
    assert!(matches!(e, Error::Interrupted), "{e}");
    lab.assert_nothing_left("a cancelled create");
}

/// One row of the reaper's table: the session's state, its expiry relative to now, whether its
/// container is listed and whether its creator still runs, and what the reaper must do.
struct Case {
    state: State,
    expires_in: i64,
    container: bool,
    creator_alive: bool,
    expect: Option<&'static str>,
}

#[test]
fn reap_classification_table() {
    let cases = [
        Case { state: State::Running, expires_in: 60, container: true, creator_alive: false, expect: None },
        Case { state: State::Running, expires_in: 0, container: true, creator_alive: false, expect: Some("expire") },
        Case { state: State::Running, expires_in: -5, container: false, creator_alive: false, expect: Some("expire") },
        Case {
            state: State::Running,
            expires_in: 60,
            container: false,
            creator_alive: false,
            expect: Some("vanished"),
        },
        Case { state: State::Creating, expires_in: 60, container: false, creator_alive: true, expect: None },
        Case { state: State::Creating, expires_in: -5, container: true, creator_alive: true, expect: None },
        Case {
            state: State::Creating,
            expires_in: 60,
            container: true,
            creator_alive: false,
            expect: Some("abandoned"),
        },
        Case {
            state: State::Creating,
            expires_in: -5,
            container: false,
            creator_alive: false,
            expect: Some("abandoned"),
        },
    ];
    let now = 1_000_000;
    for (i, case) in cases.iter().enumerate() {
        let id = format!("{i:08}-0000-0000-0000-000000000000");
        let row = row(&id, case.state, now + case.expires_in);
        let containers: Vec<ManagedContainer> =
            case.container.then(|| container(&format!("c{i}"), Some(&id))).into_iter().collect();
        let actions = classify(
            &[row],
            &containers,
            now,
            |asked| {
                assert_eq!(asked, id, "only a creating row's creator is asked about");
                case.creator_alive
            },
            &HashSet::new(),
        );
        let expected: Vec<Action> = case
            .expect
            .map(|kind| match kind {
                "expire" => Action::Expire { id: id.clone() },
                "vanished" => Action::Vanished { id: id.clone() },
                _ => Action::Abandoned { id: id.clone() },
            })
            .into_iter()
            .collect();
        assert_eq!(actions, expected, "case {i}");
    }

    // Containers: with a row, with an unknown session, with no session label at all.
    let rows = [row("s1", State::Running, now + 60)];
    let containers = [container("c1", Some("s1")), container("c2", Some("gone")), container("c3", None)];
    let actions = classify(&rows, &containers, now, |_| panic!("no creating rows"), &HashSet::new());
    assert_eq!(actions, vec![Action::Orphan { container: "c2".into() }, Action::Orphan { container: "c3".into() }]);

    // Health: a session's state and its container's, whether its sshd answered, and the verdict.
    // (row state, container state, sshd silent, expires in, expected failure reason)
    type HealthCase = (State, Option<&'static str>, bool, i64, Option<&'static str>);
    let health: [HealthCase; 9] = [
        (State::Running, Some("running"), false, 60, None),
        (State::Running, Some("exited"), false, 60, Some("its container is exited")),
        (State::Running, Some("paused"), false, 60, Some("its container is paused")),
        (State::Running, Some("running"), true, 60, Some("its sshd did not answer on port 10000 within 10s")),
        // Expiry comes first: an expired session is removed as expired, whatever its health.
        (State::Running, Some("exited"), true, -5, None),
        // A failed session whose container removal did not finish is tried again.
        (State::Failed, Some("exited"), false, 60, Some("earlier reason")),
        (State::Failed, None, false, 60, Some("earlier reason")),
        // Cleaned up: kept as a record until its expiry.
        (State::Failed, None, false, 60, None),
        (State::Failed, None, false, -5, None),
    ];
    for (i, (state, container_state, silent, expires_in, reason)) in health.into_iter().enumerate() {
        let id = format!("h{i}");
        let mut row = row(&id, state, now + expires_in);
        // Cases 5 and 6 have a container id recorded (cleanup unfinished); 7 and 8 do not.
        if state == State::Running || i < 7 {
            row.container_id = Some(format!("c{i}"));
        }
        row.failure = (state == State::Failed).then(|| "earlier reason".to_string());
        let containers: Vec<ManagedContainer> = container_state
            .map(|s| ManagedContainer { state: s.into(), ..container(&format!("c{i}"), Some(&id)) })
            .into_iter()
            .collect();
        let silent: HashSet<String> = silent.then(|| id.clone()).into_iter().collect();
        let actions = classify(&[row], &containers, now, |_| panic!("no creating rows"), &silent);
        let expected: Vec<Action> = match (reason, expires_in) {
            (Some(reason), _) => vec![Action::Failed { id: id.clone(), reason: reason.into() }],
            (None, e) if e < 0 => vec![Action::Expire { id: id.clone() }],
            (None, _) => vec![],
        };
        assert_eq!(actions, expected, "health case {i}");
    }
}

fn row(id: &str, state: State, expires_at: i64) -> SessionRow {
    SessionRow { expires_at, ..SessionRow::example(id, state) }
}

fn container(id: &str, session: Option<&str>) -> ManagedContainer {
    ManagedContainer {
        id: id.into(),
        name: format!("sandman-{id}"),
        session_id: session.map(str::to_string),
        state: crate::engine::RUNNING.into(),
    }
}

/// Each way a session breaks (its container killed or paused, its sshd gone, its network
/// removed) is found by one pass: the session is marked failed with why, its container removed
/// and its slice released; the user's next create replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_session_fails_is_cleaned_in_one_pass_and_the_next_create_replaces_it() {
    type Breakage = (&'static str, fn(&Lab, &str), &'static str);
    let breakages: [Breakage; 4] = [
        ("killed", |lab, c| lab.engine.kill(c), "its container is exited"),
        ("paused", |lab, c| lab.engine.pause(c), "its container is paused"),
        ("sshd gone", |lab, c| lab.engine.stop_sshd(c), "its sshd did not answer"),
        (
            "network removed",
            |lab, c| {
                lab.engine.remove_network(&lab.settings.network);
                lab.engine.stop_sshd(c);
            },
            "its sshd did not answer",
        ),
    ];
    for (what, break_it, reason) in breakages {
        let lab = Lab::new();
        let healthy = lab.create("bob").await.unwrap().session;
        let broken = lab.create("alice").await.unwrap().session;
        assert_eq!(lab.gpu_instances().len(), 2);
        break_it(&lab, broken.container_id.as_deref().unwrap());

        let report = lab.sessions.reap(false).await.unwrap();
        assert_eq!(report.failed_sessions.len(), 1, "{what}: {report:?}");
        assert_eq!(report.failed_sessions[0].id, broken.id, "{what}");
        assert!(report.failed_sessions[0].reason.contains(reason), "{what}: {report:?}");
        assert!(report.failed.is_empty(), "{what}: {report:?}");
        let row = lab.sessions.get(&broken.id).unwrap();
        assert_eq!(row.state, State::Failed, "{what}");
        assert!(row.failure.as_deref().is_some_and(|f| f.contains(reason)), "{what}: {row:?}");
        assert!(lab.engine.container(broken.container_id.as_deref().unwrap()).is_none(), "{what}: container left");
        assert_eq!(lab.gpu_instances().len(), 1, "{what}: the slice is released");
        assert!(row.gpu_uuid.is_none() && row.container_id.is_none(), "{what}: {row:?}");

        let again = lab.sessions.reap(false).await.unwrap();
        assert_eq!(again.total(), 0, "{what}: a second pass has nothing to do: {again:?}");
        assert_eq!(lab.sessions.get(&healthy.id).unwrap().state, State::Running, "{what}: the neighbour is untouched");

        let replaced = lab.create("alice").await.unwrap().session;
        assert_eq!(replaced.state, State::Running, "{what}");
        assert!(lab.sessions.get(&broken.id).is_err(), "{what}: the failed record is replaced");
        assert_eq!(lab.sessions.list().unwrap().len(), 2, "{what}");
    }
}

/// A failed session's port is free: when the range has no other, a create for another user
/// takes it, and the failed record makes way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sessions_port_goes_to_the_next_create() {
    let lab = Lab::with(|s| s.ssh_port_end = s.ssh_port_start);
    let broken = lab.create("alice").await.unwrap().session;
    lab.engine.kill(broken.container_id.as_deref().unwrap());
    let e = lab.create("bob").await.err().expect("the only port is taken");
    assert!(matches!(e, Error::Exhausted(_)), "{e}");
    lab.sessions.reap(false).await.unwrap();
    let bob = lab.create("bob").await.unwrap().session;
    assert_eq!(bob.ssh_port, broken.ssh_port);
    assert!(lab.sessions.get(&broken.id).is_err());
}

#[tokio::test]
async fn reap_carries_on_past_a_failed_teardown_and_the_next_pass_finishes_it() {
    let lab = Lab::new();
    let alice = lab.create("alice").await.unwrap().session;
    let bob = lab.create("bob").await.unwrap().session;
    lab.expire(&alice.id);
    lab.expire(&bob.id);
    let alice_container = alice.container_id.clone().unwrap();
    lab.engine.fail_next_on(Op::Remove, &alice_container, unavailable("remove"));

    let report = lab.sessions.reap(false).await.unwrap();
    assert_eq!(report.expired, vec![bob.id.clone()], "the other session is still reaped");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].id, alice.id);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["failed"][0]["id"], alice.id.as_str());
    assert_eq!(json["failed"][0]["error"], "injected: remove");
    assert!(lab.engine.container(&bob.container_id.unwrap()).is_none());
    // The row went first; the container is now an orphan, and its slice stays until it is gone.
    assert!(lab.sessions.list().unwrap().is_empty());
    assert!(lab.engine.container(&alice_container).is_some());
    assert_eq!(lab.gpu_instances(), vec![alice.gpu_uuid.clone().unwrap()]);

    let again = lab.sessions.reap(false).await.unwrap();
    assert_eq!(again.orphans, vec![alice_container]);
    assert_eq!(again.gpu_instances, vec![alice.gpu_uuid.unwrap()]);
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    lab.assert_nothing_left("two reaper passes");
}

#[tokio::test]
async fn reap_removes_vanished_abandoned_and_orphaned() {
    let lab = Lab::new();
    let alice = lab.create("alice").await.unwrap().session;
    let bob = lab.create("bob").await.unwrap().session;
    lab.engine.remove(alice.container_id.as_deref().unwrap()).await.unwrap();
    // A create whose process died after its reservation: a row in `creating`, its lock free.
    let carol = "00000000-dead-0000-0000-000000000000";
    let reservation = Reservation {
        id: carol,
        user: "carol",
        image: "img",
        ttl_minutes: 60,
        now: chrono::Utc::now().timestamp(),
        workspace: "/w",
        port_range: (lab.settings.ssh_port_start, lab.settings.ssh_port_end),
        uid_start: 30000,
    };
    lab.sessions
        .store()
        .reserve(&reservation, |_| Ok("key".into()), |_| Ok("fp".into()), |_| true, |_, _| Ok(None))
        .unwrap();
    let stray = lab.engine.add_container(
        "sandman-stray",
        HashMap::from([(engine::LABEL_INSTANCE.to_string(), lab.sessions.instance.clone())]),
    );

    let dry = lab.sessions.reap(true).await.unwrap();
    assert_eq!((dry.vanished.len(), dry.abandoned.len(), dry.orphans.len()), (1, 1, 1), "{dry:?}");
    assert_eq!(lab.sessions.list().unwrap().len(), 3, "a dry run removes nothing");

    let report = lab.sessions.reap(false).await.unwrap();
    assert_eq!(report.vanished, vec![alice.id.clone()]);
    assert_eq!(report.abandoned, vec![carol.to_string()]);
    assert_eq!(report.orphans, vec![stray]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let left: Vec<String> = lab.sessions.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![bob.id.clone()]);
    assert_eq!(lab.gpu_instances(), vec![bob.gpu_uuid.unwrap()], "alice's slice was released");
    assert_eq!(lab.session_lock_files(), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extend_racing_a_reap_is_never_lost() {
    let lab = Lab::with(|s| s.gpu_backend = GpuBackendKind::None);
    // The reaper is another process: its own connection to the same database.
    let reaper = Arc::new(Lab::service(&lab.settings, &lab.engine));
    let runtime = tokio::runtime::Handle::current();
    let (mut extends_won, mut reaps_won) = (0, 0);
    for round in 0..200 {
        let session = lab.create("alice").await.unwrap().session;
        lab.expire(&session.id);
        let start = Arc::new(Barrier::new(2));
        let extend = {
            let (sessions, start, id) = (lab.sessions.clone(), start.clone(), session.id.clone());
            std::thread::spawn(move || {
                start.wait();
                sessions.extend(&id, 60)
            })
        };
        let reap = {
            let (reaper, start, runtime) = (reaper.clone(), start.clone(), runtime.clone());
            std::thread::spawn(move || {
                start.wait();
                runtime.block_on(reaper.reap(false))
            })
        };
        let extended = tokio::task::spawn_blocking(move || extend.join().unwrap()).await.unwrap();
        let reaped = tokio::task::spawn_blocking(move || reap.join().unwrap()).await.unwrap().unwrap();
        let container = lab.engine.container(session.container_id.as_deref().unwrap());
        match extended {
            Ok(row) => {
                extends_won += 1;
                let now = lab.sessions.get(&session.id).unwrap();
                assert!(now.expires_at > chrono::Utc::now().timestamp(), "round {round}");
                assert_eq!(now.expires_at, row.expires_at, "round {round}");
                assert!(container.is_some(), "round {round}: an extended session lost its container");
                assert!(!reaped.expired.contains(&session.id), "round {round}");
                lab.sessions.remove(&session.id).await.unwrap();
            }
            Err(Error::NotFound(_)) => {
                reaps_won += 1;
                assert_eq!(reaped.expired, vec![session.id.clone()], "round {round}");
                assert!(container.is_none(), "round {round}");
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        assert!(reaped.failed.is_empty(), "round {round}: {:?}", reaped.failed);
    }
    assert_eq!(extends_won + reaps_won, 200);
    lab.assert_nothing_left("the races");
}

#[tokio::test]
async fn removing_several_goes_on_past_failures_and_counts_the_already_gone_as_removed() {
    let lab = Lab::new();
    let alice = lab.create("alice").await.unwrap().session;
    let bob = lab.create("bob").await.unwrap().session;
    let carol = lab.create("carol").await.unwrap().session;

    // Alice's container will not go; while it fails, another client removes Bob's row.
    let db = lab.settings.db.clone();
    let bob_id = bob.id.clone();
    lab.engine.fail_next_on(Op::Remove, alice.container_id.as_deref().unwrap(), move || {
        assert!(Store::open(&db).unwrap().delete_session(&bob_id).unwrap());
        Error::Unavailable("injected: remove".into())
    });
    let removal = lab.sessions.remove_sessions(&[alice.id.clone(), bob.id.clone(), carol.id.clone()]).await;
    let removed: Vec<&str> = removal.removed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(removed, vec![carol.id.as_str()]);
    assert_eq!(removal.already_gone, vec![bob.id.clone()]);
    assert_eq!(removal.failed.len(), 1);
    assert_eq!(removal.failed[0].0, alice.id);
    assert!(matches!(&removal.failed[0].1, Error::Unavailable(_)));

    // `remove_all` lists what is there now under the same policy: only Alice is left.
    let all = lab.sessions.remove_all().await.unwrap();
    let removed: Vec<&str> = all.removed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(removed, vec![alice.id.as_str()]);
    assert!(all.already_gone.is_empty() && all.failed.is_empty());
    // Bob's container lost its row to the other client: the reaper's business.
    let report = lab.sessions.reap(false).await.unwrap();
    assert_eq!(report.orphans, vec![bob.container_id.unwrap()]);
    lab.assert_nothing_left("removing all and a reap");
}

/// The user's key file as a session's sshd reads it.
fn user_key_file(lab: &Lab, user: &str) -> String {
    std::fs::read_to_string(user_keys_dir(&lab.settings.state_dir(), user).join("authorized_keys")).unwrap()
}

#[tokio::test]
async fn own_keys_outlive_sessions_and_generated_keys_do_not() {
    let lab = Lab::new();
    let (_, own) = ssh::generate_key_pair("alice@laptop").unwrap();
    let req = CreateRequest { public_key: Some(format!("{own}\n")), ..request("alice") };
    let created = lab.create_with(req, &CancellationToken::new()).await.unwrap();
    assert!(created.private_key.is_none());
    let container = lab.engine.container(created.session.container_id.as_deref().unwrap()).unwrap();
    let session_file = &container.files[&format!("{}/authorized_keys", ssh::CONFIG_DIR)];
    assert!(session_file.is_empty(), "the given key is read from the user's keys, not the session's file");
    assert_eq!(user_key_file(&lab, "alice"), format!("{own}\n"));
    lab.sessions.remove(&created.session.id).await.unwrap();

    // Again with the same key: no duplicate; a generated key stays out of the user's keys.
    let req = CreateRequest { public_key: Some(own.clone()), ..request("alice") };
    let again = lab.create_with(req, &CancellationToken::new()).await.unwrap();
    lab.sessions.remove(&again.session.id).await.unwrap();
    let generated = lab.create("alice").await.unwrap();
    assert!(generated.private_key.is_some());
    let keys = lab.sessions.user_keys("alice").unwrap();
    assert_eq!(keys.iter().map(|k| k.key_line.as_str()).collect::<Vec<_>>(), vec![own.as_str()]);
    assert_eq!(user_key_file(&lab, "alice"), format!("{own}\n"));
}

#[tokio::test]
async fn keys_are_added_and_revoked_with_clear_errors() {
    let lab = Lab::new();
    let (_, first) = ssh::generate_key_pair("one").unwrap();
    let (_, second) = ssh::generate_key_pair("two").unwrap();
    let a = lab.sessions.add_user_key("bob", &first).unwrap();
    let b = lab.sessions.add_user_key("bob", &second).unwrap();
    assert_eq!(user_key_file(&lab, "bob"), format!("{first}\n{second}\n"));
    let e = lab.sessions.add_user_key("bob", &first).unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains(&a.fingerprint)), "{e}");
    let e = lab.sessions.add_user_key("bob", "ssh-ed25519 nonsense").unwrap_err();
    assert!(matches!(e, Error::InvalidInput { field: "public key", .. }), "{e}");
    let e = lab.sessions.add_user_key("Root!", &first).unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e}");

    lab.sessions.remove_user_key("bob", &a.fingerprint).unwrap();
    assert_eq!(user_key_file(&lab, "bob"), format!("{second}\n"));
    let e = lab.sessions.remove_user_key("bob", &a.fingerprint).unwrap_err();
    assert!(matches!(&e, Error::NotFound(m) if m.contains(&a.fingerprint)), "{e}");
    assert_eq!(lab.sessions.user_keys("bob").unwrap(), vec![b]);
    assert!(lab.sessions.user_keys("carol").unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_create_takes_back_the_key_it_added() {
    let lab = Lab::new();
    let (_, own) = ssh::generate_key_pair("x").unwrap();
    lab.engine.fail_next(Op::Start, unavailable("start"));
    let req = CreateRequest { public_key: Some(own), ..request("alice") };
    assert!(lab.create_with(req, &CancellationToken::new()).await.is_err());
    lab.assert_nothing_left("a failed create with a key");
    assert!(lab.sessions.user_keys("alice").unwrap().is_empty());
    assert_eq!(user_key_file(&lab, "alice"), "");
}

#[tokio::test]
async fn a_create_passes_the_resolved_limits_to_the_engine_and_the_row() {
    let lab = Lab::with(|s| {
        s.pids_limit = 256;
        s.limits = toml::from_str(
            r#"memory = "2g"
               cpus = 1
               max_memory = "8g"
               max_cpus = 2
               [profile."1g.5gb"]
               memory = "3g"
               max_memory = "4g""#,
        )
        .unwrap();
    });
    let g = 1u64 << 30;
    let asked = CreateRequest {
        limits: LimitRequest { memory: None, cpus: Some(1.5), shm_size: Some(g / 2), writable_layer: None },
        ..request("alice")
    };
    let created = lab.create_with(asked, &CancellationToken::new()).await.unwrap();
    let want = SessionLimits {
        memory: 3 * g,
        cpus: 1.5,
        shm_size: g / 2,
        pids: 256,
        log_size: 10 << 20,
        log_files: 3,
        writable_layer: None,
    };
    let container = lab.engine.container(created.session.container_id.as_deref().unwrap()).unwrap();
    assert_eq!(container.limits, Some(want), "the profile's default memory, the asked CPUs and /dev/shm");
    assert_eq!(created.session.limits, Some(want));
    assert_eq!(lab.sessions.get(&created.session.id).unwrap().limits, Some(want), "stored on the row");

    // Above the profile's maximum: refused naming it, after the pick, and nothing is left.
    let greedy = CreateRequest { limits: LimitRequest { memory: Some(5 * g), ..Default::default() }, ..request("bob") };
    let Err(e) = lab.create_with(greedy, &CancellationToken::new()).await else { panic!("created") };
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("5g is above the maximum 4g (max_memory of [limits.profile.\"1g.5gb\"])"), "{e}");
    assert_eq!(lab.sessions.list().unwrap().len(), 1, "only alice's session");
    assert_eq!(lab.engine.containers().len(), 1);
}

#[tokio::test]
async fn limits_above_the_maxima_are_refused_before_anything_is_reserved() {
    let lab = Lab::with(|s| s.limits.max_cpus = Some(2.0));
    let greedy = CreateRequest { limits: LimitRequest { cpus: Some(3.0), ..Default::default() }, ..request("bob") };
    let Err(e) = lab.create_with(greedy, &CancellationToken::new()).await else { panic!("created") };
    assert!(e.to_string().contains("invalid cpus: 3 is above the maximum 2 (max_cpus in [limits])"), "{e}");
    assert!(lab.sessions.store().user("bob").unwrap().is_none(), "no user row either");
    lab.assert_nothing_left("refused limits");
}

#[tokio::test]
async fn a_new_users_foreign_workspace_is_refused_unless_adopted() {
    use std::os::unix::fs::MetadataExt;
    let lab = Lab::new();
    let foreign = lab.settings.workspace_root.join("mallory");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "someone else's").unwrap();
    let owner = std::fs::metadata(&foreign).unwrap().uid();

    let Err(e) = lab.create("mallory").await else { panic!("created") };
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains(&foreign.display().to_string()) && text.contains("--adopt-workspace"), "{text}");
    assert_eq!(std::fs::metadata(&foreign).unwrap().uid(), owner, "not handed over");
    assert!(lab.sessions.store().user("mallory").unwrap().is_none(), "the user is not recorded");
    lab.assert_nothing_left("refused workspace");

    let adopted = CreateRequest { adopt_workspace: true, ..request("mallory") };
    let created = lab.create_with(adopted, &CancellationToken::new()).await.unwrap();
    let uid = lab.sessions.store().user("mallory").unwrap().unwrap().uid;
    assert_eq!(std::fs::metadata(&foreign).unwrap().uid(), uid, "given to the user on purpose");
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).unwrap(), "someone else's", "contents kept");
    assert_eq!(created.session.user, "mallory");
}

#[tokio::test]
async fn a_workspace_quota_that_cannot_be_enforced_refuses_the_create() {
    let lab = Lab::with(|s| s.workspace_quota = Some(crate::limits::ByteSize(50 << 30)));
    let Err(e) = lab.create("alice").await else { panic!("created without its quota") };
    assert!(matches!(e, Error::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("workspace_quota = \"50g\"") && e.to_string().contains("project quotas"), "{e}");
    lab.assert_nothing_left("an unenforceable quota");
}

#[tokio::test]
async fn a_writable_layer_limit_reaches_the_container_where_the_storage_enforces_it() {
    let lab = Lab::with(|s| s.limits = toml::from_str("writable_layer = \"20g\"").unwrap());
    lab.engine.set_storage("overlay2", Some("xfs"));
    let g = 1u64 << 30;
    let alice = lab.create("alice").await.unwrap().session;
    let id = alice.container_id.as_deref().unwrap();
    assert_eq!(lab.engine.spec(id).unwrap().limits.writable_layer, Some(20 * g), "the default");
    assert_eq!(lab.sessions.get(&alice.id).unwrap().limits.unwrap().writable_layer, Some(20 * g), "on the row");

    let smaller =
        CreateRequest { limits: LimitRequest { writable_layer: Some(g), ..Default::default() }, ..request("bob") };
    let bob = lab.create_with(smaller, &CancellationToken::new()).await.unwrap().session;
    assert_eq!(lab.engine.spec(bob.container_id.as_deref().unwrap()).unwrap().limits.writable_layer, Some(g));

    let larger = CreateRequest {
        limits: LimitRequest { writable_layer: Some(21 * g), ..Default::default() },
        ..request("carol")
    };
    let Err(e) = lab.create_with(larger, &CancellationToken::new()).await else { panic!("created") };
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("21g is above the maximum 20g (writable_layer in [limits])"), "{e}");
    assert_eq!(lab.sessions.list().unwrap().len(), 2, "alice's and bob's only");
}

#[tokio::test]
async fn a_writable_layer_limit_the_storage_cannot_enforce_refuses_the_create() {
    // Asked by the create, on the fake's default storage (overlay2 on extfs).
    let lab = Lab::new();
    let asked = CreateRequest {
        limits: LimitRequest { writable_layer: Some(1 << 30), ..Default::default() },
        ..request("alice")
    };
    let Err(e) = lab.create_with(asked, &CancellationToken::new()).await else { panic!("created without its limit") };
    assert!(matches!(e, Error::InvalidInput { field: "writable_layer", .. }), "a request this host cannot honour: {e}");
    let text = e.to_string();
    assert!(text.contains("writable_layer = \"1g\" cannot be enforced"), "{text}");
    assert!(text.contains("storage driver is overlay2 on extfs") && text.contains("xfs mounted with pquota"), "{text}");
    assert!(lab.sessions.store().user("alice").unwrap().is_none(), "no user row either");
    lab.assert_nothing_left("an unenforceable writable layer");
    assert!(lab.create("alice").await.is_ok(), "without the limit the create works");

    // Set for one profile only, on a driver that cannot: every create is refused, the config is wrong here.
    let lab = Lab::with(|s| s.limits = toml::from_str("[profile.\"7g.40gb\"]\nwritable_layer = \"5g\"").unwrap());
    lab.engine.set_storage("fuse-overlayfs", None);
    let Err(e) = lab.create("bob").await else { panic!("created") };
    assert!(matches!(e, Error::Unavailable(_)), "the admin's setting: the host is misconfigured: {e}");
    assert!(e.to_string().contains("storage driver is fuse-overlayfs, which cannot"), "{e}");
    lab.assert_nothing_left("a profile's unenforceable writable layer");

    // A swarm service cannot take storage options, whatever the driver.
    let lab = Lab::with(|s| {
        s.limits = toml::from_str("writable_layer = \"5g\"").unwrap();
        s.engine = crate::config::EngineKind::Swarm;
    });
    lab.engine.set_storage("overlay2", Some("xfs"));
    let Err(e) = lab.create("carol").await else { panic!("created") };
    assert!(matches!(e, Error::Unavailable(_)) && e.to_string().contains("swarm services cannot set storage"), "{e}");
    lab.assert_nothing_left("a writable layer on a swarm");
}

#[tokio::test]
async fn usage_reports_workspace_bytes_and_oom_kills_per_running_session() {
    let lab = Lab::new();
    let alice = lab.create("alice").await.unwrap().session;
    std::fs::write(PathBuf::from(&alice.workspace).join("data/blob"), vec![1u8; 64 << 10]).unwrap();
    lab.engine.set_oom_kills(alice.container_id.as_deref().unwrap(), 2);
    let usage = lab.sessions.usage().await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].id.as_str(), usage[0].user.as_str()), (alice.id.as_str(), "alice"));
    assert_eq!(usage[0].oom_kills, Some(2));
    assert!(usage[0].workspace_bytes.unwrap() >= 64 << 10, "{usage:?}");
    assert_eq!(lab.sessions.workspace_usage(&alice), usage[0].workspace_bytes);
}

#[tokio::test]
async fn reap_passes_report_oom_kills_since_the_previous_pass() {
    let lab = Lab::new();
    let alice = lab.create("alice").await.unwrap().session;
    let bob = lab.create("bob").await.unwrap().session;
    assert_eq!(lab.sessions.new_oom_kills(false).await.unwrap(), vec![]);
    lab.engine.set_oom_kills(alice.container_id.as_deref().unwrap(), 2);
    let dry = lab.sessions.new_oom_kills(true).await.unwrap();
    assert_eq!(dry, vec![OomKills { id: alice.id.clone(), user: "alice".into(), kills: 2 }]);
    assert_eq!(lab.sessions.new_oom_kills(false).await.unwrap(), dry, "a dry run records nothing");
    assert_eq!(lab.sessions.new_oom_kills(false).await.unwrap(), vec![], "reported once");
    lab.engine.set_oom_kills(alice.container_id.as_deref().unwrap(), 5);
    lab.engine.set_oom_kills(bob.container_id.as_deref().unwrap(), 1);
    let mut next = lab.sessions.new_oom_kills(false).await.unwrap();
    next.sort_by(|a, b| a.user.cmp(&b.user));
    assert_eq!(next.iter().map(|k| (k.user.as_str(), k.kills)).collect::<Vec<_>>(), [("alice", 3), ("bob", 1)]);
}

/// A network an admin made with inter-container traffic on is refused, naming it and the fix,
/// unless `allow_icc`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_with_inter_container_traffic_is_refused_unless_allowed() {
    let lab = Lab::new();
    lab.engine.add_icc_network(&lab.settings.network);
    let e = lab.create("alice").await.err().expect("the create succeeded");
    let text = e.to_string();
    assert!(matches!(e, Error::Unavailable(_)), "{e}");
    assert!(text.contains(&lab.settings.network) && text.contains("enable_icc=false") && text.contains("allow_icc"));
    lab.assert_nothing_left("a refused network");

    let lab = Lab::with(|s| s.allow_icc = true);
    lab.engine.add_icc_network(&lab.settings.network);
    lab.create("alice").await.unwrap();
}

/// Idle detection's pure rule: which signal counts, how the expiry moves, when a session is idle.
#[test]
fn judge_counts_ssh_cpu_and_gpu_and_bumps_expiry_up_to_the_maximum() {
    use super::reap::{Ending, Observed, Policy, judge};
    let policy = Policy {
        idle_timeout_minutes: 30,
        activity_bump_minutes: 60,
        cpu_active_percent: 10,
        protect_busy_gpu: true,
        max_ttl_minutes: 180,
    };
    let mut r = row("s", State::Running, 3600);
    r.activity.cpu_usage_usec = Some(1_000_000);
    r.activity.cpu_sampled_at = Some(1000);
    let seen = |ssh: u32, cpu: u64, gpu: u32| Observed {
        ssh_connections: Some(ssh),
        cpu_usage_usec: Some(cpu),
        gpu_processes: Some(gpu),
    };

    // Nothing: idle since creation (0); idle once 30 minutes have passed.
    let v = judge(&r, &seen(0, 1_000_000, 0), &policy, 1060);
    assert_eq!((v.signal, v.last_active, v.expires_at, v.idle_deadline, v.idle), (None, 0, 3600, Some(1800), false));
    assert_eq!(v.ending(), (1800, Ending::Idle));
    assert!(v.update.last_activity_at.is_none(), "no activity is recorded as none");
    assert!(judge(&r, &seen(0, 1_000_000, 0), &policy, 1800).idle);
    let unread = Observed { ssh_connections: None, ..seen(0, 1_000_000, 0) };
    let v = judge(&r, &unread, &policy, 1800);
    assert_eq!((v.idle, v.idle_deadline), (false, None), "connections that cannot be read are not idleness");

    // An SSH connection: active now; expiry moved to now + 60 min.
    let v = judge(&r, &seen(1, 1_000_000, 0), &policy, 1060);
    assert_eq!((v.signal, v.last_active, v.expires_at, v.idle), (Some("ssh"), 1060, 1060 + 3600, false));
    assert_eq!(v.update.last_activity_at, Some(1060));

    // CPU: 6 s in 60 s is 10% of one CPU (counts); 5.9 s does not.
    assert_eq!(judge(&r, &seen(0, 7_000_000, 0), &policy, 1060).signal, Some("cpu"));
    assert_eq!(judge(&r, &seen(0, 6_900_000, 0), &policy, 1060).signal, None);
    let no_cpu = Policy { cpu_active_percent: 0, ..policy };
    assert_eq!(judge(&r, &seen(0, 60_000_000, 0), &no_cpu, 1060).signal, None, "0 turns CPU off");
    let mut first = r.clone();
    first.activity.cpu_usage_usec = None;
    assert_eq!(judge(&first, &seen(0, 60_000_000, 0), &policy, 1060).signal, None, "no baseline yet");
    let mut restarted = r.clone();
    restarted.activity.cpu_usage_usec = Some(90_000_000);
    assert_eq!(judge(&restarted, &seen(0, 1_000, 0), &policy, 1060).signal, None, "a counter that went back");

    // A GPU process protects the session and counts as activity; without protection it does not.
    let v = judge(&r, &seen(0, 1_000_000, 2), &policy, 5000);
    assert_eq!((v.signal, v.idle, v.idle_deadline), (Some("gpu"), false, None));
    let unprotected = Policy { protect_busy_gpu: false, ..policy };
    let v = judge(&r, &seen(0, 1_000_000, 2), &unprotected, 5000);
    assert_eq!((v.signal, v.idle), (None, true));
    assert_eq!(v.update.gpu_processes, Some(2), "still shown");

    // The bump never passes created_at + max_ttl (180 min) and never moves the expiry earlier.
    let v = judge(&r, &seen(1, 0, 0), &policy, 9000);
    assert_eq!(v.expires_at, 180 * 60);
    let mut long = r.clone();
    long.expires_at = 10_000;
    assert_eq!(judge(&long, &seen(1, 0, 0), &policy, 1060).expires_at, 10_000);
    let no_bump = Policy { activity_bump_minutes: 0, ..policy };
    assert_eq!(judge(&r, &seen(1, 0, 0), &no_bump, 1060).expires_at, 3600);

    // Off: never idle. A session's own timeout wins over the host's.
    let off = Policy { idle_timeout_minutes: 0, ..policy };
    let v = judge(&r, &seen(0, 0, 0), &off, 100_000);
    assert_eq!((v.idle, v.idle_deadline, v.ending()), (false, None, (3600, Ending::Expiry)));
    let mut own = r.clone();
    own.activity.idle_timeout_minutes = Some(5);
    let s = Settings { idle_timeout_minutes: 30, ..Settings::default() };
    assert_eq!(Policy::of(&s, &own).idle_timeout_minutes, 5);
    assert_eq!(Policy::of(&s, &r).idle_timeout_minutes, 30);
}

#[test]
fn each_warning_is_given_once_per_deadline_and_notices_follow_the_deadline() {
    use super::reap::{Ending, notice_due, warning_due, warning_text};
    let d = 10_000;
    assert_eq!(warning_due(None, None, d, d - 601), None, "more than 10 minutes left");
    assert_eq!(warning_due(None, None, d, d - 600), Some(10));
    assert_eq!(warning_due(Some(d), Some(10), d, d - 300), None, "given already");
    assert_eq!(warning_due(Some(d), Some(10), d, d - 60), Some(1));
    assert_eq!(warning_due(Some(d), Some(1), d, d - 30), None);
    assert_eq!(warning_due(None, None, d, d - 30), Some(1), "both due: only the nearer");
    assert_eq!(warning_due(Some(d - 3600), Some(1), d, d - 300), Some(10), "a new deadline is warned about anew");
    assert_eq!(warning_due(None, None, d, d), None, "due now: it is reaped, not warned");

    // While activity moves the ending, no warning: a short idle timeout or bump would warn every pass.
    use super::reap::{Observed, Policy, judge, warning_for};
    let policy = Policy {
        idle_timeout_minutes: 5,
        activity_bump_minutes: 5,
        cpu_active_percent: 0,
        protect_busy_gpu: true,
        max_ttl_minutes: 60,
    };
    let r = row("s", State::Running, 3000);
    let active = Observed { ssh_connections: Some(1), ..Default::default() };
    let quiet = Observed { ssh_connections: Some(0), ..Default::default() };
    let v = judge(&r, &active, &policy, 1000);
    assert_eq!((v.ending(), warning_for(&r, &v, 1000)), ((1300, Ending::Idle), None));
    let v = judge(&r, &quiet, &policy, 200);
    assert_eq!(warning_for(&r, &v, 200), Some((300, Ending::Idle, 10)), "idle since creation: warned");
    let at_max = Policy { idle_timeout_minutes: 0, ..policy };
    let mut capped = row("s", State::Running, 3600);
    capped.created_at = 0;
    let v = judge(&capped, &active, &at_max, 3100);
    assert_eq!(v.expires_at, 3600, "at the maximum the bump stops");
    assert_eq!(warning_for(&capped, &v, 3100), Some((3600, Ending::Expiry, 10)), "so the expiry is warned about");

    assert!(notice_due(None, d));
    assert!(!notice_due(Some(d), d));
    assert!(!notice_due(Some(d - 240), d), "moved later by 4 minutes: kept");
    assert!(notice_due(Some(d - 300), d));
    assert!(notice_due(Some(d + 1), d), "earlier: always");

    let idle = warning_text(Ending::Idle, 1_700_000_000, 1_700_000_000 - 540, 120);
    assert!(idle.contains("22:13 UTC") && idle.contains("in 9 minutes") && idle.contains("idle"), "{idle}");
    let expiry = warning_text(Ending::Expiry, 1_700_000_000, 1_700_000_000 - 50, 120);
    assert!(expiry.contains("in 1 minute)") && expiry.contains("reason: expiry"), "{expiry}");
}

/// Reap passes on the fake engine: activity keeps a session, idleness ends it (reason idle),
/// warnings run as the user, a GPU process protects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_passes_record_activity_warn_as_the_user_and_reap_idle_sessions() {
    use crate::engine::ContainerActivity;
    let lab = Lab::with(|s| {
        s.idle_timeout_minutes = 30;
        s.activity_bump_minutes = 0;
    });
    let busy = lab.create("alice").await.unwrap().session;
    let idle = lab.create("bob").await.unwrap().session;
    let gpu = lab.create("carol").await.unwrap().session;
    // Dave's connections cannot be read (the fake's default): unknown is not idle.
    let unknown = lab.create("dave").await.unwrap().session;
    let container = |r: &SessionRow| r.container_id.clone().unwrap();
    lab.engine.set_activity(&container(&busy), ContainerActivity { ssh_connections: Some(1), cpu_usage_usec: Some(5) });
    for quiet in [&idle, &gpu] {
        lab.engine
            .set_activity(&container(quiet), ContainerActivity { ssh_connections: Some(0), cpu_usage_usec: Some(5) });
    }
    lab.sessions.store().set_sim_processes(gpu.gpu_uuid.as_deref().unwrap(), 1).unwrap();
    assert_eq!(lab.sessions.gpu().compute_processes(gpu.gpu_uuid.as_deref().unwrap()).unwrap(), Some(1));

    // All three were created 25 minutes ago: bob's idle reap is 5 minutes away.
    lab.sql("UPDATE sessions SET created_at = created_at - 1500");
    let report = lab.sessions.reap(false).await.unwrap();
    assert_eq!(report.total(), 0, "{report:?}");
    let a = lab.sessions.get(&busy.id).unwrap().activity;
    assert_eq!((a.last_activity_signal.as_deref(), a.ssh_connections), (Some("ssh"), Some(1)));
    let c = lab.sessions.get(&gpu.id).unwrap().activity;
    assert_eq!((c.last_activity_signal.as_deref(), c.gpu_processes), (Some("gpu"), Some(1)));
    let b = lab.sessions.get(&idle.id).unwrap().activity;
    assert_eq!((b.last_activity_at, b.warned_minutes), (None, Some(10)), "bob was warned: {b:?}");

    // The warning ran as bob, never as root, and wrote the notice file too.
    let uid = lab.sessions.store().user("bob").unwrap().unwrap().uid;
    let execs: Vec<_> = lab.engine.execs().into_iter().filter(|e| e.container == container(&idle)).collect();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(execs[0].uid, uid);
    assert!(execs.iter().all(|e| e.uid != 0));
    assert!(execs[0].command[4].contains("idle") && execs[0].command[4].contains("in 5 minutes"), "{:?}", execs[0]);
    assert!(execs[0].command[5].ends_with(" idle"), "the notice names the reason: {:?}", execs[0].command[5]);

    // A second pass warns no one again.
    lab.sessions.reap(false).await.unwrap();
    let again = lab.engine.execs().into_iter().filter(|e| e.container == container(&idle)).count();
    assert_eq!(again, 1, "each warning is given once");

    // 31 minutes on: bob is reaped for idleness, the others stay.
    lab.sql("UPDATE sessions SET created_at = created_at - 360");
    let dry = lab.sessions.reap(true).await.unwrap();
    assert_eq!(dry.idle, vec![idle.id.clone()]);
    assert!(lab.sessions.get(&idle.id).is_ok(), "a dry run removes nothing");
    let report = lab.sessions.reap(false).await.unwrap();
    assert_eq!(report.idle, vec![idle.id.clone()], "{report:?}");
    assert!(report.expired.is_empty() && report.failed.is_empty(), "{report:?}");
    assert!(lab.sessions.get(&idle.id).is_err());
    assert!(lab.engine.container(&container(&idle)).is_none(), "its container is removed");
    assert!(lab.sessions.get(&busy.id).is_ok() && lab.sessions.get(&gpu.id).is_ok());
    assert!(lab.sessions.get(&unknown.id).is_ok(), "unreadable connections are not idleness");
    assert_eq!(lab.gpu_instances().len(), 3, "bob's slice is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_own_idle_timeout_is_bounded_by_the_hosts() {
    let lab = Lab::with(|s| s.idle_timeout_minutes = 60);
    let asked = |m: i64| CreateRequest { idle_timeout_minutes: Some(m), ..request("alice") };
    for bad in [0, -5, 61] {
        let e = lab.create_with(asked(bad), &CancellationToken::new()).await.err().expect("refused");
        assert!(matches!(e, Error::InvalidInput { field: "idle_timeout_minutes", .. }), "{e}");
        assert!(e.to_string().contains("1 to 60") && e.to_string().contains(&bad.to_string()), "{e}");
    }
    lab.assert_nothing_left("refused idle timeouts");
    let row = lab.create_with(asked(15), &CancellationToken::new()).await.unwrap().session;
    assert_eq!(row.activity.idle_timeout_minutes, Some(15));
    assert_eq!(lab.sessions.get(&row.id).unwrap().activity.idle_timeout_minutes, Some(15));
    let off = Settings { idle_timeout_minutes: 0, max_ttl_minutes: 600, ..Settings::default() };
    assert_eq!(idle_timeout_minutes(600, &off).unwrap(), 600);
    let e = idle_timeout_minutes(601, &off).unwrap_err().to_string();
    assert!(e.contains("1 to 600") && e.contains("max_ttl_minutes"), "{e}");
}

#[tokio::test]
async fn on_an_engine_with_nodes_files_go_in_at_create_and_the_home_node_is_kept() {
    let lab = Lab::new();
    lab.engine.set_node(crate::engine::Placement { node_id: "node-1".into(), address: "127.0.0.1".into() });
    let (_, own) = ssh::generate_key_pair("nina@laptop").unwrap();
    lab.sessions.add_user_key("nina", &own).unwrap();

    let created = lab.create("nina").await.unwrap();
    assert_eq!(created.ssh_host, "127.0.0.1", "users are sent to the node, not to ssh_host");
    assert!(created.known_hosts.starts_with("[127.0.0.1]:"), "{}", created.known_hosts);
    let id = created.session.container_id.clone().unwrap();
    assert_eq!(lab.sessions.ssh_host_for(&created.session.id), "127.0.0.1");
    let spec = lab.engine.spec(&id).unwrap();
    assert_eq!(spec.home_node, None, "no home node before the first session");
    let secrets: Vec<&FileSpec> = spec.files.iter().filter(|f| f.secret).collect();
    assert_eq!(secrets.len(), 1);
    assert!(secrets[0].path.ends_with("ssh_host_ed25519_key"));
    assert_eq!((secrets[0].uid, secrets[0].mode), (lab.sessions.store().user("nina").unwrap().unwrap().uid, 0o600));
    assert_eq!(spec.files.last().unwrap().path, ssh::READY_FILE, "the ready file comes last");
    let files = lab.engine.container(&id).unwrap().files;
    let keys = String::from_utf8(files[&format!("{}/authorized_keys", ssh::USER_KEYS_DIR)].clone()).unwrap();
    assert_eq!(keys.trim(), ssh::parse_public_key(&own).unwrap(), "the user's keys go in as a copy");
    assert!(String::from_utf8_lossy(&files["etc/passwd"]).contains("\nnina:x:"));
    assert_eq!(lab.sessions.store().user_node("nina").unwrap().as_deref(), Some("node-1"));

    // The next session goes where the home is.
    lab.sessions.remove(&created.session.id).await.unwrap();
    assert_eq!(lab.sessions.ssh_host_for(&created.session.id), "gpu-host", "the node is forgotten with the session");
    let again = lab.create("nina").await.unwrap();
    let spec = lab.engine.spec(&again.session.container_id.unwrap()).unwrap();
    assert_eq!(spec.home_node.as_deref(), Some("node-1"));
}

#[tokio::test]
async fn with_nfs_homes_no_node_is_recorded() {
    let lab = Lab::with(|s| s.workspace_nfs = Some("nfs1:/export".into()));
    lab.engine.set_node(crate::engine::Placement { node_id: "node-2".into(), address: "127.0.0.1".into() });
    let created = lab.create("nora").await.unwrap();
    let spec = lab.engine.spec(&created.session.container_id.unwrap()).unwrap();
    assert_eq!((spec.home_node, spec.workspace_nfs.as_deref()), (None, Some("nfs1:/export")));
    assert_eq!(lab.sessions.store().user_node("nora").unwrap(), None);
}
