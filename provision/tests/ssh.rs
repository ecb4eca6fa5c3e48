//! The SSH transport against a real OpenSSH sshd on loopback (see
//! `kubeup_testsupport::sshd`). Needs root, openssh-server, openssh-client,
//! sudo and iptables (hack/apt/ssh.txt).

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kubeup_provision::ssh::*;
use kubeup_testsupport::sshd::{Agent, KeyPair, PortOnlyForUser, Sshd, ensure_user, keygen};
use tempfile::TempDir;

const NOPW_USER: &str = "kubeup-t-nopw";
const PW_USER: &str = "kubeup-t-pw";
const BASTION_USER: &str = "kubeup-t-bastion";
// Distinctive, so a leak into any log line or error is easy to spot.
const SUDO_PASSWORD: &str = "Kubeup-Sudo-Pw-7f3a9e";

/// Every tracing line of this test binary, at TRACE, to check what is (and
/// is not) logged.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn opts() -> SshOptions {
    SshOptions {
        connect_timeout: Duration::from_secs(15),
        auth_timeout: Duration::from_secs(15),
        command_timeout: Duration::from_secs(120),
        reconnect_attempts: 2,
        reconnect_backoff: Duration::from_millis(50),
        ..SshOptions::default()
    }
}

fn pin(key: &str) -> HostKeyTrust {
    HostKeyTrust {
        policy: HostKeyPolicy::Pin,
        key: Some(key.to_owned()),
    }
}

struct Fixture {
    sshd: Sshd,
    keys: TempDir,
    root_key: KeyPair,
}

fn fixture() -> Fixture {
    logs();
    let sshd = Sshd::start().expect("start sshd");
    let keys = tempfile::tempdir().unwrap();
    let root_key = keygen(keys.path(), "root", "ed25519", "").unwrap();
    sshd.authorize("root", &root_key.public).unwrap();
    Fixture {
        sshd,
        keys,
        root_key,
    }
}

impl Fixture {
    fn target(&self, user: &str, key: &KeyPair) -> SshTarget {
        let mut t = SshTarget::new(
            self.sshd.address(),
            self.sshd.port(),
            user,
            Auth::KeyFile {
                path: key.private.clone(),
                passphrase: None,
            },
        );
        t.host_key = pin(&self.sshd.host_key("ed25519"));
        t
    }

    /// The user whose sudo needs a password, with that password.
    fn sudo_with_password(&self) -> SshTarget {
        self.sshd.authorize(PW_USER, &self.root_key.public).unwrap();
        let mut t = self.target(PW_USER, &self.root_key);
        t.sudo_password = Some(Secret::new(SUDO_PASSWORD));
        t
    }

    fn root(&self) -> SshTarget {
        self.target("root", &self.root_key)
    }
}

fn memory() -> Arc<dyn HostKeyStore> {
    Arc::new(MemoryHostKeyStore::new())
}

async fn connect(t: &SshTarget) -> Result<Session> {
    Session::connect(t, memory(), &opts()).await
}

#[tokio::test]
async fn key_auth_ed25519_ecdsa_rsa_and_commands() {
    let f = fixture();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = keygen(f.keys.path(), kind, kind, "").unwrap();
        f.sshd.authorize("root", &key.public).unwrap();
        let s = connect(&f.target("root", &key)).await.unwrap();
        let out = s.run(&Command::new("echo").arg(kind)).await.unwrap();
        assert_eq!(out.stdout_str(), format!("{kind}\n"));

        // The same key as Secret data (the operator's path).
        let mut t = f.target("root", &key);
        t.auth = Auth::KeyData {
            pem: Secret::new(key.private_pem()),
            passphrase: None,
        };
        let s = connect(&t).await.unwrap();
        assert!(s.run(&Command::new("true")).await.unwrap().success());
    }

    let s = connect(&f.root()).await.unwrap();
    // Arguments are quoted: nothing is expanded by the remote shell.
    let out = s
        .run(
            &Command::new("printf")
                .arg("%s|")
                .args(["a b", "$HOME", "it's", "`id`"]),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "a b|$HOME|it's|`id`|");

    // Many commands, concurrently, over one connection: more than sshd's
    // MaxSessions (10, OpenSSH's default) allows open at once, and each one
    // lasts long enough to overlap the others.
    let s = Arc::new(s);
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(
                async move { s.run(&Command::shell(format!("sleep 0.1; echo {i}"))).await },
            )
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap().stdout_str(), format!("{i}\n"));
    }

    // Exit status, stderr tail and host in the error; output() keeps any status.
    let cmd = Command::shell("echo to-stdout; echo boom-on-stderr >&2; exit 3");
    let err = s.run(&cmd).await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.category(), "command_failed");
    assert!(
        msg.contains("exit status 3") && msg.contains("boom-on-stderr"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("root@127.0.0.1:{}", f.sshd.port())),
        "{msg}"
    );
    assert!(msg.contains("exit 3"), "names the command: {msg}");
    let out = s.output(&cmd).await.unwrap();
    assert_eq!(out.exit_status, Some(3));
    assert_eq!(out.stdout_str(), "to-stdout\n");

    // stdin is delivered and closed.
    let out = s
        .run(&Command::new("wc").arg("-c").stdin(vec![b'x'; 300_000]))
        .await
        .unwrap();
    assert_eq!(out.stdout_str().trim(), "300000");

    // Output lines go to tracing with the host.
    s.run(&Command::new("echo").arg("marker-5d1c"))
        .await
        .unwrap();
    let logs = captured_logs();
    assert!(
        logs.lines().any(|l| l.contains("marker-5d1c")
            && l.contains(&format!("host=root@127.0.0.1:{}", f.sshd.port()))),
        "stdout line logged with host"
    );
}

#[tokio::test]
async fn wrong_key_refused() {
    let f = fixture();
    let other = keygen(f.keys.path(), "other", "ed25519", "").unwrap();
    let err = connect(&f.target("root", &other)).await.unwrap_err();
    assert_eq!(err.category(), "auth_rejected", "{err}");
    assert!(err.is_permanent());
    assert!(err.to_string().contains("root"), "{err}");
}

#[tokio::test]
async fn encrypted_key_needs_passphrase() {
    let f = fixture();
    let key = keygen(f.keys.path(), "enc", "ed25519", "s3cret-passphrase").unwrap();
    f.sshd.authorize("root", &key.public).unwrap();
    let err = connect(&f.target("root", &key)).await.unwrap_err();
    assert_eq!(err.category(), "key_encrypted", "{err}");
    assert!(err.to_string().contains("encrypted"), "{err}");
    let mut t = f.target("root", &key);
    t.auth = Auth::KeyFile {
        path: key.private.clone(),
        passphrase: Some(Secret::new("s3cret-passphrase")),
    };
    connect(&t).await.unwrap();
}

#[tokio::test]
async fn pin_match_key_and_fingerprint() {
    let f = fixture();
    for trust in [
        pin(&f.sshd.host_key("ed25519")),
        pin(&f.sshd.host_key_fingerprint("ed25519")),
        // The host also has ECDSA and RSA keys: a pinned key's algorithm is
        // asked for first, so the host presents that one.
        pin(&f.sshd.host_key("rsa")),
        pin(&f.sshd.host_key("ecdsa")),
        // A fingerprint does not say which key it is: the other key types
        // are asked for in turn.
        pin(&f.sshd.host_key_fingerprint("rsa")),
        pin(&f.sshd.host_key_fingerprint("ecdsa")),
    ] {
        let mut t = f.root();
        t.host_key = trust.clone();
        let s = connect(&t)
            .await
            .unwrap_or_else(|e| panic!("{trust:?}: {e}"));
        let fp = s.host_key_fingerprint().await.unwrap();
        let pinned = trust.key.unwrap();
        if pinned.starts_with("SHA256:") {
            assert_eq!(fp, pinned);
        }
    }
}

#[tokio::test]
async fn pin_mismatch_names_both_fingerprints() {
    let f = fixture();
    let stranger = keygen(f.keys.path(), "stranger", "ed25519", "").unwrap();
    let stranger_fp = fingerprint(&russh::keys::PublicKey::from_openssh(&stranger.public).unwrap());
    let presented_fp = f.sshd.host_key_fingerprint("ed25519");
    for wrong in [stranger.public.clone(), stranger_fp.clone()] {
        let mut t = f.root();
        t.host_key = pin(&wrong);
        let started = Instant::now();
        let err = connect(&t).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let msg = err.to_string();
        assert_eq!(err.category(), "host_key_mismatch", "{msg}");
        assert!(err.is_permanent() && err.is_host_key_error());
        assert!(msg.contains(&stranger_fp), "expected fingerprint in {msg}");
        assert!(
            msg.contains(&presented_fp),
            "presented fingerprint in {msg}"
        );
        assert!(
            msg.contains(&format!("127.0.0.1:{}", f.sshd.port())),
            "{msg}"
        );
        assert!(msg.contains("hostKey.key"), "how to re-trust: {msg}");
    }
}

#[tokio::test]
async fn accept_new_records_then_refuses_a_changed_key() {
    let mut f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let store: Arc<dyn HostKeyStore> = Arc::new(KnownHostsFile::new(&known_hosts));
    let mut t = f.root();
    t.host_key = HostKeyTrust::default();
    assert_eq!(t.host_key.policy, HostKeyPolicy::AcceptNew);

    let s = Session::connect(&t, store.clone(), &opts()).await.unwrap();
    let first_fp = s.host_key_fingerprint().await.unwrap();
    let text = std::fs::read_to_string(&known_hosts).unwrap();
    let port = f.sshd.port();
    assert!(
        text.starts_with(&format!(
            "[127.0.0.1]:{port} {}",
            f.sshd
                .host_key("ed25519")
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        )),
        "{text}"
    );
    // OpenSSH itself agrees with what was written.
    let check = std::process::Command::new("ssh-keygen")
        .args(["-F", &format!("[127.0.0.1]:{port}"), "-f"])
        .arg(&known_hosts)
        .output()
        .unwrap();
    assert!(check.status.success());
    // Second connection: same key, nothing new recorded.
    Session::connect(&t, store.clone(), &opts()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), text);

    f.sshd.restart_with_new_host_keys().unwrap();
    let new_fp = f.sshd.host_key_fingerprint("ed25519");
    let err = Session::connect(&t, store.clone(), &opts())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.category(), "host_key_mismatch", "{msg}");
    assert!(msg.contains(&first_fp) && msg.contains(&new_fp), "{msg}");
    assert!(msg.contains(&known_hosts.display().to_string()), "{msg}");
    assert!(msg.contains("ssh-keygen -R"), "{msg}");
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        text,
        "nothing recorded"
    );

    // The existing session reconnects after a drop — and stops at once on
    // the changed key instead of backing off.
    s.close().await;
    let started = Instant::now();
    let err = s.run(&Command::new("true")).await.unwrap_err();
    assert_eq!(err.category(), "host_key_mismatch");
    assert!(started.elapsed() < Duration::from_secs(3));

    // The operator's store: seeded from status, recorded key readable back.
    let mem = Arc::new(MemoryHostKeyStore::new());
    let s = Session::connect(&t, mem.clone(), &opts()).await.unwrap();
    let recorded = mem.recorded("127.0.0.1", port).unwrap();
    assert_eq!(Some(recorded.clone()), s.host_key_openssh().await);
    let seeded = Arc::new(MemoryHostKeyStore::new());
    seeded
        .insert_openssh("127.0.0.1", port, &f.root_key.public)
        .unwrap();
    let err = Session::connect(&t, seeded, &opts()).await.unwrap_err();
    assert_eq!(err.category(), "host_key_mismatch");
    assert!(err.to_string().contains("status.hostKey"), "{err}");
}

/// A known_hosts line that names the host but whose key cannot be read is
/// not "never seen": accept-new must not record a new key over it.
#[tokio::test]
async fn an_unparsable_known_hosts_line_for_the_host_stops_accept_new() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let port = f.sshd.port();
    let text = format!(
        "# kept by kubeup\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n[127.0.0.1]:{port} ssh-ed25519 AAAA-damaged-key\n"
    );
    std::fs::write(&known_hosts, &text).unwrap();
    let store: Arc<dyn HostKeyStore> = Arc::new(KnownHostsFile::new(&known_hosts));
    let mut t = f.root();
    t.host_key = HostKeyTrust::default();
    let err = Session::connect(&t, store, &opts()).await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.category(), "host_key_store", "{msg}");
    assert!(err.is_permanent(), "{msg}");
    assert!(
        msg.contains(&format!("{}:3", known_hosts.display())),
        "names file and line: {msg}"
    );
    assert!(msg.contains("fix or remove"), "{msg}");
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        text,
        "nothing recorded"
    );
}

#[tokio::test]
async fn agent_auth() {
    let f = fixture();
    let agent = Agent::start().unwrap();
    for kind in ["ed25519", "rsa"] {
        let key = keygen(f.keys.path(), &format!("agent-{kind}"), kind, "").unwrap();
        f.sshd.authorize("root", &key.public).unwrap();
        agent.add(&key.private).unwrap();
    }
    let mut t = f.root();
    t.auth = Auth::AgentSocket(agent.socket().to_owned());
    let s = connect(&t).await.unwrap();
    assert_eq!(
        s.run(&Command::new("whoami")).await.unwrap().stdout_str(),
        "root\n"
    );

    let empty = Agent::start().unwrap();
    t.auth = Auth::AgentSocket(empty.socket().to_owned());
    let err = connect(&t).await.unwrap_err();
    assert_eq!(err.category(), "auth_rejected", "{err}");
}

fn sudo_users() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        ensure_user(
            NOPW_USER,
            None,
            Some(&format!("{NOPW_USER} ALL=(ALL) NOPASSWD: ALL")),
        )
        .unwrap();
        ensure_user(
            PW_USER,
            Some(SUDO_PASSWORD),
            Some(&format!("{PW_USER} ALL=(ALL) ALL")),
        )
        .unwrap();
    });
}

#[tokio::test]
async fn sudo_nopasswd() {
    sudo_users();
    let f = fixture();
    f.sshd.authorize(NOPW_USER, &f.root_key.public).unwrap();
    let s = connect(&f.target(NOPW_USER, &f.root_key)).await.unwrap();
    assert_eq!(
        s.run(&Command::new("id").arg("-un"))
            .await
            .unwrap()
            .stdout_str(),
        format!("{NOPW_USER}\n")
    );
    let out = s
        .run_privileged(&Command::new("id").arg("-u"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "0\n");
    let out = s
        .run_privileged(&Command::shell("cat; echo \" $(id -u)\"").stdin("in"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "in 0\n");
    // Uploads go through sudo too: root-owned destination.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("nopw.conf");
    let outcome = s
        .write_file(b"x=1\n", dest.to_str().unwrap(), 0o600, Some("root:root"))
        .await
        .unwrap();
    assert!(matches!(outcome, UploadOutcome::Uploaded { bytes: 4 }));
    assert_eq!(std::fs::read(&dest).unwrap(), b"x=1\n");
}

#[tokio::test]
async fn sudo_needs_password_is_a_clear_error() {
    sudo_users();
    let f = fixture();
    f.sshd.authorize(PW_USER, &f.root_key.public).unwrap();
    let s = connect(&f.target(PW_USER, &f.root_key)).await.unwrap();
    let err = s.run_privileged(&Command::new("true")).await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.category(), "sudo_needs_password", "{msg}");
    assert!(err.is_permanent());
    assert!(
        msg.contains(PW_USER) && msg.contains("127.0.0.1") && msg.contains("NOPASSWD"),
        "{msg}"
    );
}

#[tokio::test]
async fn sudo_with_password_never_logged() {
    sudo_users();
    let f = fixture();
    let mut t = f.sudo_with_password();
    assert!(!format!("{t:?}").contains(SUDO_PASSWORD));
    let s = connect(&t).await.unwrap();
    let out = s
        .run_privileged(&Command::new("id").arg("-u"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "0\n");
    // The password line is consumed by sudo, not by the command.
    let out = s
        .run_privileged(&Command::new("cat").stdin("only-this"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "only-this");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("pw.conf");
    s.write_file(b"secret-free\n", dest.to_str().unwrap(), 0o644, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"secret-free\n");
    let err = s
        .run_privileged(&Command::shell("echo fail >&2; exit 4"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains(SUDO_PASSWORD), "{msg}");
    assert!(msg.contains("exit status 4"), "{msg}");

    t.sudo_password = Some(Secret::new("not-the-password"));
    let s2 = connect(&t).await.unwrap();
    let err = s2.run_privileged(&Command::new("true")).await.unwrap_err();
    assert_eq!(err.category(), "sudo_password_rejected", "{err}");

    let logs = captured_logs();
    assert!(
        logs.contains(&format!("host={PW_USER}@127.0.0.1")),
        "logs are captured"
    );
    assert!(
        !logs.contains(SUDO_PASSWORD),
        "sudo password leaked into a log line"
    );
    assert!(!logs.contains("not-the-password"));
}

#[tokio::test]
async fn bastion_is_the_only_way_in() {
    logs();
    ensure_user(BASTION_USER, None, None).unwrap();
    let mut bastion = Sshd::start().unwrap();
    let target = Sshd::builder().listen("127.0.0.2").start().unwrap();
    let _fw = PortOnlyForUser::new("127.0.0.2", target.port(), BASTION_USER).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "k", "ed25519", "").unwrap();
    bastion.authorize(BASTION_USER, &key.public).unwrap();
    target.authorize("root", &key.public).unwrap();
    let auth = Auth::KeyFile {
        path: key.private.clone(),
        passphrase: None,
    };
    let known = keys.path().join("known_hosts");
    let store: Arc<dyn HostKeyStore> = Arc::new(KnownHostsFile::new(&known));

    // Directly: refused (the firewall only lets the bastion's sshd through).
    let direct = SshTarget::new("127.0.0.2", target.port(), "root", auth.clone());
    let err = Session::connect(&direct, store.clone(), &opts())
        .await
        .unwrap_err();
    assert_eq!(err.category(), "connect", "{err}");

    let mut via = direct.clone();
    via.bastion = Some(Box::new(SshTarget::new(
        "127.0.0.1",
        bastion.port(),
        BASTION_USER,
        auth.clone(),
    )));
    let s = Session::connect(&via, store.clone(), &opts())
        .await
        .unwrap();
    let out = s.run(&Command::new("whoami")).await.unwrap();
    assert_eq!(out.stdout_str(), "root\n");
    assert_eq!(
        s.host_key_fingerprint().await.unwrap(),
        target.host_key_fingerprint("ed25519")
    );
    // Both host keys were checked (and, accept-new, recorded).
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(
        text.contains(&format!("[127.0.0.1]:{} ", bastion.port())),
        "{text}"
    );
    assert!(
        text.contains(&format!("[127.0.0.2]:{} ", target.port())),
        "{text}"
    );
    let data = vec![7u8; 3 << 20];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("through-bastion");
    s.write_file(&data, dest.to_str().unwrap(), 0o644, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    assert_eq!(
        s.bastion_host_key_fingerprint().await.as_deref(),
        Some(bastion.host_key_fingerprint("ed25519").as_str())
    );

    // The operator's store keeps the two keys apart: each readable back
    // under its own address, and a seeded one is what is checked.
    let mem = Arc::new(MemoryHostKeyStore::new());
    let s2 = Session::connect(&via, mem.clone(), &opts()).await.unwrap();
    let bastion_key = mem.recorded("127.0.0.1", bastion.port()).unwrap();
    let target_key = mem.recorded("127.0.0.2", target.port()).unwrap();
    assert_ne!(bastion_key, target_key);
    assert_eq!(Some(bastion_key), s2.bastion_host_key_openssh().await);
    assert_eq!(Some(target_key), s2.host_key_openssh().await);
    drop(s2);

    // A wrong bastion pin stops before the target is ever reached.
    let mut bad = via.clone();
    bad.bastion.as_mut().unwrap().host_key = pin(&target.host_key("ed25519"));
    let err = Session::connect(&bad, store.clone(), &opts())
        .await
        .unwrap_err();
    assert_eq!(err.category(), "host_key_mismatch");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", bastion.port())),
        "{err}"
    );

    // accept-new: a changed bastion key is refused like a target's, with
    // both fingerprints, and nothing new is recorded.
    let old_fp = bastion.host_key_fingerprint("ed25519");
    drop(s);
    bastion.restart_with_new_host_keys().unwrap();
    let new_fp = bastion.host_key_fingerprint("ed25519");
    let err = Session::connect(&via, store.clone(), &opts())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.category(), "host_key_mismatch", "{msg}");
    assert!(msg.contains(&old_fp) && msg.contains(&new_fp), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{}", bastion.port())),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&known).unwrap(), text);
}

fn write_pattern(path: &Path, size: usize, seed: u8) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 16];
    let mut x = seed as u32 | 1;
    for chunk in 0..size.div_ceil(block.len()) {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let n = block.len().min(size - chunk * block.len());
        f.write_all(&block[..n]).unwrap();
    }
}

#[tokio::test]
async fn upload_atomic_skip_and_attributes() {
    let f = fixture();
    let s = connect(&f.root()).await.unwrap();
    let local_dir = tempfile::tempdir().unwrap();
    let local = local_dir.path().join("blob");
    write_pattern(&local, (5 << 20) + 123, 1);
    let remote_dir = tempfile::tempdir().unwrap();
    let dest = remote_dir.path().join("sub dir/it's a \"file\"");
    let dest_s = dest.to_str().unwrap();

    let o = s
        .upload(&local, dest_s, 0o640, Some("root:root"))
        .await
        .unwrap();
    assert_eq!(
        o,
        UploadOutcome::Uploaded {
            bytes: (5 << 20) + 123
        }
    );
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&local).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o640
    );

    assert_eq!(
        s.upload(&local, dest_s, 0o640, Some("root:root"))
            .await
            .unwrap(),
        UploadOutcome::Unchanged
    );
    assert_eq!(
        s.upload(&local, dest_s, 0o600, Some("root")).await.unwrap(),
        UploadOutcome::AttributesUpdated
    );
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o600
    );

    write_pattern(&local, 1000, 2);
    assert_eq!(
        s.upload(&local, dest_s, 0o600, None).await.unwrap(),
        UploadOutcome::Uploaded { bytes: 1000 }
    );
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&local).unwrap()
    );

    // Rendered content, including empty.
    let conf = remote_dir.path().join("etc/kubelet.yaml");
    let conf_s = conf.to_str().unwrap();
    assert_eq!(
        s.write_file(b"a: 1\n", conf_s, 0o644, None).await.unwrap(),
        UploadOutcome::Uploaded { bytes: 5 }
    );
    assert_eq!(
        s.write_file(b"a: 1\n", conf_s, 0o644, None).await.unwrap(),
        UploadOutcome::Unchanged
    );
    assert_eq!(
        s.write_file(b"", conf_s, 0o644, None).await.unwrap(),
        UploadOutcome::Uploaded { bytes: 0 }
    );
    assert_eq!(std::fs::read(&conf).unwrap(), b"");

    // No temp files left behind.
    let leftovers: Vec<_> = walk(remote_dir.path())
        .into_iter()
        .filter(|p| p.contains(".kubeup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let err = s
        .write_file(b"x", "relative/path", 0o644, None)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "invalid_argument");
    let err = s
        .upload(Path::new("/nonexistent/kubeup"), "/tmp/x", 0o644, None)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "local_io", "{err}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p.display().to_string());
    }
    out
}

#[tokio::test]
async fn interrupted_upload_leaves_the_old_file() {
    let f = fixture();
    let s = Arc::new(connect(&f.root()).await.unwrap());
    let remote_dir = tempfile::tempdir().unwrap();
    let dest = remote_dir.path().join("kubelet");
    std::fs::write(&dest, b"old binary").unwrap();
    // Drop the connection while the bytes are flowing.
    let (_local_dir, local, upload) = start_big_upload(&s, &dest, 3);
    partial_upload(remote_dir.path()).await;
    s.close().await;
    let err = upload.await.unwrap().unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"old binary");
    // The remote script's trap removes the partial file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while walk(remote_dir.path())
        .iter()
        .any(|p| p.contains(".kubeup-"))
    {
        assert!(
            Instant::now() < deadline,
            "temp file left: {:?}",
            walk(remote_dir.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the session reconnects for the retry, which then succeeds.
    let o = s
        .upload(&local, dest.to_str().unwrap(), 0o755, None)
        .await
        .unwrap();
    assert_eq!(o, UploadOutcome::Uploaded { bytes: 200 << 20 });
}

/// A 200 MiB file (pattern `seed`) being uploaded to `dest`: its
/// directory (kept while the upload runs), its path, the upload.
fn start_big_upload(
    s: &Arc<Session>,
    dest: &Path,
    seed: u8,
) -> (
    TempDir,
    std::path::PathBuf,
    tokio::task::JoinHandle<Result<UploadOutcome>>,
) {
    let local_dir = tempfile::tempdir().unwrap();
    let local = local_dir.path().join("big");
    write_pattern(&local, 200 << 20, seed);
    let upload = {
        let (s, local, dest) = (s.clone(), local.clone(), dest.to_owned());
        tokio::spawn(async move { s.upload(&local, dest.to_str().unwrap(), 0o755, None).await })
    };
    (local_dir, local, upload)
}

/// The upload's temp file in `dir` once more than 1 MiB has arrived.
async fn partial_upload(dir: &Path) -> String {
    let started = Instant::now();
    loop {
        let partial = walk(dir).into_iter().find(|p| p.contains(".kubeup-"));
        if let Some(p) = partial
            && std::fs::metadata(&p).is_ok_and(|m| m.len() > (1 << 20))
        {
            return p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "upload never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The processes holding `path` open (what the remote upload script writes).
fn holders(path: &str) -> Vec<String> {
    let mut pids = vec![];
    for proc_dir in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = proc_dir.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == path))
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn a_host_that_stops_reading_fails_the_upload_as_stalled() {
    let f = fixture();
    let mut o = opts();
    o.stall_timeout = Duration::from_secs(2);
    let s = Arc::new(Session::connect(&f.root(), memory(), &o).await.unwrap());
    let remote_dir = tempfile::tempdir().unwrap();
    let dest = remote_dir.path().join("kubelet");
    let (_local_dir, _, upload) = start_big_upload(&s, &dest, 5);
    // Once bytes flow, freeze whatever writes the partial file: the host
    // stops reading, as a hung disk or process would.
    let partial = partial_upload(remote_dir.path()).await;
    let frozen = holders(&partial);
    assert!(!frozen.is_empty(), "nothing holds {partial}");
    let mut args = vec!["-STOP".to_string()];
    args.extend(frozen.iter().cloned());
    std::process::Command::new("kill")
        .args(&args)
        .status()
        .unwrap();
    let stopped = Instant::now();
    let err = upload.await.unwrap().unwrap_err();
    let waited = stopped.elapsed();
    let mut args = vec!["-CONT".to_string()];
    args.extend(frozen);
    std::process::Command::new("kill")
        .args(&args)
        .status()
        .unwrap();
    assert_eq!(err.category(), "upload_stalled", "{err}");
    assert!(!err.is_permanent(), "{err}");
    assert!(waited < Duration::from_secs(20), "took {waited:?}");
    // The session is still usable for the retry.
    assert_eq!(
        s.run(&Command::new("echo").arg("ok"))
            .await
            .unwrap()
            .stdout_str(),
        "ok\n"
    );
    assert!(!dest.exists());
}

#[tokio::test]
async fn command_timeout_then_session_still_usable() {
    let f = fixture();
    let s = connect(&f.root()).await.unwrap();
    let started = Instant::now();
    let err = s
        .run(
            &Command::new("sleep")
                .arg("30")
                .timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.category(), "command_timeout", "{err}");
    assert!(err.to_string().contains("sleep 30"), "{err}");
    assert_eq!(
        s.run(&Command::new("echo").arg("ok"))
            .await
            .unwrap()
            .stdout_str(),
        "ok\n"
    );
}

#[tokio::test]
async fn connection_refused_names_host_and_port() {
    logs();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = SshTarget::new("127.0.0.1", port, "root", Auth::Agent);
    let err = connect(&t).await.unwrap_err();
    assert_eq!(err.category(), "connect", "{err}");
    assert!(!err.is_permanent());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn reconnects_after_a_drop() {
    let f = fixture();
    let mut o = opts();
    o.reconnect_attempts = 8;
    let s = Session::connect(&f.root(), memory(), &o).await.unwrap();
    s.run(&Command::new("true")).await.unwrap();
    s.close().await;
    s.run(&Command::new("true")).await.unwrap();

    // sshd down for a moment: the next command reconnects with backoff.
    let Fixture {
        mut sshd,
        keys: _keys,
        root_key: _root_key,
    } = f;
    sshd.stop();
    s.close().await;
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(150));
        sshd.restart().unwrap();
        sshd
    });
    let out = s.run(&Command::new("echo").arg("back")).await.unwrap();
    assert_eq!(out.stdout_str(), "back\n");
    let _sshd = restart.await.unwrap();
    assert!(
        captured_logs().contains("reconnect failed"),
        "backed off at least once"
    );
}

/// `converge::write_files` (one script on stdin for all changed files)
/// through sudo with and without a password: contents byte for byte, modes,
/// root ownership, only changed files rewritten, no temp file left, and the
/// content of a key never in a log line.
#[tokio::test]
async fn converge_writes_files_in_one_round_trip_through_sudo() {
    use kubeup_provision::converge::write_files;
    use kubeup_provision::hostplan::HostFile;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    sudo_users();
    let f = fixture();
    for (user, password) in [(NOPW_USER, None), (PW_USER, Some(SUDO_PASSWORD))] {
        f.sshd.authorize(user, &f.root_key.public).unwrap();
        let mut t = f.target(user, &f.root_key);
        t.sudo_password = password.map(Secret::new);
        let s = connect(&t).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p).to_str().unwrap().to_owned();
        let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let key = "-----BEGIN PRIVATE KEY-----\nkubeup-test-key-material-4c1d\n";
        let mut files = vec![
            HostFile::new(at("a/b/config.yaml"), "x: 1\nKUBEUP_EOF\n", 0o644, &[]),
            HostFile::new(at("a/key.pem"), key, 0o600, &[]),
            HostFile::new(at("blob"), binary.clone(), 0o755, &[]),
            HostFile::new(at("empty"), "", 0o644, &[]),
        ];
        let changes = write_files(&s, &files, false).await.unwrap();
        assert_eq!(changes.written.len(), 4, "{user}");
        assert_eq!(
            std::fs::read(at("a/b/config.yaml")).unwrap(),
            b"x: 1\nKUBEUP_EOF\n"
        );
        assert_eq!(std::fs::read_to_string(at("a/key.pem")).unwrap(), key);
        assert_eq!(std::fs::read(at("blob")).unwrap(), binary);
        assert_eq!(std::fs::read(at("empty")).unwrap(), b"");
        for (p, mode) in [("a/key.pem", 0o600), ("blob", 0o755), ("empty", 0o644)] {
            let meta = std::fs::metadata(at(p)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{p}");
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{p} owned by root");
        }
        // Unchanged: nothing written. One changed: only it.
        let changes = write_files(&s, &files, false).await.unwrap();
        assert!(changes.written.is_empty(), "{:?}", changes.written);
        files[0].content = b"x: 2\n".to_vec();
        let changes = write_files(&s, &files, false).await.unwrap();
        assert_eq!(changes.written, vec![at("a/b/config.yaml")]);
        assert_eq!(std::fs::read(at("a/b/config.yaml")).unwrap(), b"x: 2\n");
        // The host's checksums are matched whole line by whole line: a path
        // that begins another one's with the same content (names with a
        // quote and a space) is still written.
        let longer = HostFile::new(at("twin's file2"), "same", 0o644, &[]);
        write_files(&s, std::slice::from_ref(&longer), false)
            .await
            .unwrap();
        let both = [HostFile::new(at("twin's file"), "same", 0o644, &[]), longer];
        let changes = write_files(&s, &both, false).await.unwrap();
        assert_eq!(changes.written, vec![at("twin's file")], "{user}");
        assert_eq!(std::fs::read(at("twin's file")).unwrap(), b"same");
        let leftovers: Vec<String> = walk(dir.path())
            .into_iter()
            .filter(|p| p.contains(".kubeup-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    let logs = captured_logs();
    assert!(logs.contains("files written"), "logs are captured");
    assert!(
        !logs.contains("kubeup-test-key-material"),
        "key content in a log line"
    );
}

/// A host that takes every byte and then says nothing (a hung check, a
/// wedged connection) fails the upload after `stall_timeout`, as a timeout
/// a retry may get past, instead of holding its caller for the whole
/// command timeout.
#[tokio::test]
async fn a_host_silent_after_the_last_byte_fails_the_upload_in_time() {
    use std::os::unix::fs::PermissionsExt;

    let f = fixture();
    let mut o = opts();
    o.stall_timeout = Duration::from_secs(2);
    let s = Session::connect(&f.root(), memory(), &o).await.unwrap();
    let local = tempfile::tempdir().unwrap();
    // The "decoder" drains the stream, then hangs: the host's side of a
    // transfer that never reports back.
    let decoder = local.path().join("silent-decoder");
    std::fs::write(&decoder, "#!/bin/sh\ncat >/dev/null\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&decoder, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = compressible(1 << 20);
    let plain = local.path().join("blob");
    std::fs::write(&plain, &data).unwrap();
    let (size, sha) = kubeup_provision::artifacts::sha256_file(&plain).unwrap();
    let remote = tempfile::tempdir().unwrap();
    let dest = remote.path().join("blob");
    let src = CompressedSource {
        path: &plain,
        decoder: decoder.to_str().unwrap(),
        size,
        sha256: &sha,
        keep_as: None,
    };
    let started = Instant::now();
    let err = s
        .upload_compressed(&src, dest.to_str().unwrap(), 0o644, None)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.category(), "command_timeout", "{err}");
    assert!(err.to_string().contains("after the last byte"), "{err}");
    assert!(!err.is_permanent(), "{err}");
    assert!(waited < Duration::from_secs(15), "took {waited:?}");
    assert!(!dest.exists(), "nothing committed");
}

/// Bytes that compress like a binary does (repeated structure, not noise).
fn compressible(size: usize) -> Vec<u8> {
    (0..size as u32)
        .map(|i| ((i / 7) % 251) as u8 ^ ((i % 13) as u8))
        .collect()
}

#[tokio::test]
async fn compressed_upload_through_sudo_and_a_damaged_stream() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    sudo_users();
    let f = fixture();
    let t = f.sudo_with_password();
    let s = connect(&t).await.unwrap();
    let local = tempfile::tempdir().unwrap();
    let data = compressible(3 << 20);
    let plain = local.path().join("blob");
    std::fs::write(&plain, &data).unwrap();
    let (size, sha) = kubeup_provision::artifacts::sha256_file(&plain).unwrap();
    let file = kubeup_provision::artifacts::BundleFile {
        version: "test".into(),
        sha256: sha.to_string(),
        size,
        source: "test".into(),
        executable: true,
        image: None,
        recipe: None,
    };
    let cache = kubeup_provision::artifacts::CompressedCache::new(local.path().join("zst"));
    let packed = cache.get(&plain, &file).await.unwrap();
    assert!(std::fs::metadata(&packed).unwrap().len() * 10 < size);

    let remote = tempfile::tempdir().unwrap();
    let dest = remote.path().join("bin/kubelet");
    let dest_s = dest.to_str().unwrap();
    let kept = remote.path().join(format!("transfer/{sha}.zst"));
    let src = CompressedSource {
        path: &packed,
        decoder: "zstd",
        size,
        sha256: &sha,
        keep_as: Some(kept.to_str().unwrap()),
    };
    let up = |mode| s.upload_compressed(&src, dest_s, mode, Some("root:root"));
    assert_eq!(
        up(0o755).await.unwrap(),
        UploadOutcome::Uploaded { bytes: size }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "owned by root");
    // The stream is kept as sent, readable by the operator's user.
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        std::fs::read(&packed).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(up(0o755).await.unwrap(), UploadOutcome::Unchanged);
    assert_eq!(up(0o700).await.unwrap(), UploadOutcome::AttributesUpdated);

    // A damaged copy (one byte flipped mid-frame) fails on the host's
    // checksum: the file already there stays as it was, nothing is kept.
    let mut bad = std::fs::read(&packed).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    let bad_path = local.path().join("bad.zst");
    std::fs::write(&bad_path, bad).unwrap();
    let old = remote.path().join("bin/containerd");
    std::fs::write(&old, b"old binary").unwrap();
    let bad_kept = remote.path().join("transfer/bad.zst");
    let bad_src = CompressedSource {
        path: &bad_path,
        keep_as: Some(bad_kept.to_str().unwrap()),
        ..src
    };
    let err = s
        .upload_compressed(&bad_src, old.to_str().unwrap(), 0o755, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bin/containerd"), "{err}");
    assert_eq!(std::fs::read(&old).unwrap(), b"old binary");
    assert!(!bad_kept.exists(), "a failed upload keeps no stream");
    // A host without the decoder: refused, nothing replaced.
    let no_decoder = CompressedSource {
        decoder: "kubeup-no-such-decoder",
        keep_as: None,
        ..src
    };
    let err = s
        .upload_compressed(&no_decoder, old.to_str().unwrap(), 0o755, None)
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    assert_eq!(std::fs::read(&old).unwrap(), b"old binary");
    let leftovers: Vec<String> = walk(remote.path())
        .into_iter()
        .filter(|p| p.contains(".kubeup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A valid zstd frame of other bytes of the same size passes zstd's own
/// checksum: only the host's sha256 check against the manifest stops it,
/// for a single compressed upload and for an archive alike.
#[tokio::test]
async fn a_valid_frame_of_other_bytes_is_refused_on_the_host() {
    use kubeup_provision::artifacts::{sha256_file, zstd_frame};

    let f = fixture();
    let s = connect(&f.root()).await.unwrap();
    let local = tempfile::tempdir().unwrap();
    let good = compressible(2 << 20);
    let mut other = good.clone();
    other[12345] ^= 0xff;
    let good_path = local.path().join("good");
    std::fs::write(&good_path, &good).unwrap();
    let (size, sha) = sha256_file(&good_path).unwrap();
    let sha = sha.to_string();
    let other_zst = zstd_frame(&other).unwrap();
    let other_path = local.path().join("other.zst");
    std::fs::write(&other_path, &other_zst).unwrap();

    let remote = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(remote.path().join("bin")).unwrap();
    let dest = remote.path().join("bin/kubelet");
    std::fs::write(&dest, b"old kubelet").unwrap();
    let src = CompressedSource {
        path: &other_path,
        decoder: "zstd",
        size,
        sha256: &sha,
        keep_as: None,
    };
    let err = s
        .upload_compressed(&src, dest.to_str().unwrap(), 0o755, None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bin/kubelet") && msg.contains(&sha), "{msg}");
    assert!(msg.contains(s.host()), "{msg}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"old kubelet");

    // The same in an archive: nothing of it is moved into place.
    let tiny = b"#!/bin/sh\necho tiny\n".to_vec();
    let tiny_path = local.path().join("tiny");
    std::fs::write(&tiny_path, &tiny).unwrap();
    let (_, tiny_sha) = sha256_file(&tiny_path).unwrap();
    let archive = |frames: Vec<u8>| {
        vec![
            ArchiveFile {
                name: "bin/kubelet".into(),
                size,
                mode: 0o755,
                sha256: sha.clone(),
                frames: Segment::Bytes(frames),
            },
            ArchiveFile {
                name: "bin/tiny".into(),
                size: tiny.len() as u64,
                mode: 0o755,
                sha256: tiny_sha.to_string(),
                frames: Segment::Bytes(zstd_frame(&tiny).unwrap()),
            },
        ]
    };
    let dest_dir = remote.path().to_str().unwrap();
    let err = s
        .unpack(&archive(other_zst), "zstd", dest_dir)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("bin/kubelet") && !msg.contains("bin/tiny "),
        "{msg}"
    );
    assert!(msg.contains(s.host()), "{msg}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"old kubelet");
    assert!(!remote.path().join("bin/tiny").exists(), "nothing moved");
    let leftovers: Vec<String> = walk(remote.path())
        .into_iter()
        .filter(|p| p.contains(".kubeup-"))
        .collect();
    assert!(leftovers.is_empty(), "staging removed: {leftovers:?}");

    // The honest copies go through both ways.
    s.unpack(&archive(zstd_frame(&good).unwrap()), "zstd", dest_dir)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), good);
    assert_eq!(std::fs::read(remote.path().join("bin/tiny")).unwrap(), tiny);
    let good_zst = local.path().join("good.zst");
    std::fs::write(&good_zst, zstd_frame(&good).unwrap()).unwrap();
    let dest2 = remote.path().join("bin/kubelet2");
    let src = CompressedSource {
        path: &good_zst,
        ..src
    };
    s.upload_compressed(&src, dest2.to_str().unwrap(), 0o755, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest2).unwrap(), good);
}

/// A process that ends when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A kubelet kubeup did not install (here: `sleep` copied to a temp
/// directory as `kubelet` and run from there) stops preflight. Read-only on
/// this machine; the process ends with the test.
#[tokio::test]
async fn preflight_refuses_a_kubelet_kubeup_did_not_install() {
    use kubeup_provision::converge::{Role, preflight};

    let f = fixture();
    let s = connect(&f.root()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("kubelet");
    std::fs::copy("/bin/sleep", &fake).unwrap();
    let child = KillOnDrop(
        std::process::Command::new(&fake)
            .arg("300")
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let report = preflight(&s, Role::Worker).await.unwrap();
    let text = report.error_text().unwrap_or_default();
    assert!(
        text.contains("host already runs kubelet not installed by kubeup (process"),
        "{text}"
    );
    assert!(
        text.contains(&format!(" {pid}")),
        "our fake is named: {text}"
    );
    assert!(text.contains("remove it or reset the host"), "{text}");
    drop(child);
}

/// A bundle of one big compressible binary and one small file, under a
/// version name no real bundle has (push_bundle writes to
/// /opt/kubeup/bundle/<version> on the host, here this machine).
struct TestBundle {
    dir: TempDir,
    manifest: kubeup_provision::artifacts::BundleManifest,
}

impl TestBundle {
    fn new(tag: &str) -> TestBundle {
        use kubeup_provision::artifacts::{BundleFile, BundleManifest, sha256_file};
        let dir = tempfile::tempdir().unwrap();
        let version = format!("v0.0.0-kubeup-test-{tag}-{}", std::process::id());
        let mut manifest = BundleManifest::new(version);
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        for (name, data) in [
            ("bin/kubenode", compressible(4 << 20)),
            ("bin/tiny", b"#!/bin/sh\necho tiny\n".to_vec()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &data).unwrap();
            let (size, sha256) = sha256_file(&path).unwrap();
            manifest.files.insert(
                name.into(),
                BundleFile {
                    version: "test".into(),
                    sha256: sha256.to_string(),
                    size,
                    source: "test".into(),
                    executable: true,
                    image: None,
                    recipe: None,
                },
            );
        }
        TestBundle { dir, manifest }
    }

    fn host_dir(&self) -> std::path::PathBuf {
        Path::new("/opt/kubeup/bundle").join(&self.manifest.kubernetes_version)
    }

    fn assert_on_host(&self) {
        for name in self.manifest.files.keys() {
            assert_eq!(
                std::fs::read(self.host_dir().join(name)).unwrap(),
                std::fs::read(self.dir.path().join(name)).unwrap(),
                "{name}"
            );
        }
    }
}

impl Drop for TestBundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.host_dir());
    }
}

#[tokio::test]
async fn bundle_goes_compressed_where_the_host_has_zstd_and_plain_elsewhere() {
    use kubeup_provision::artifacts::CompressedCache;
    use kubeup_provision::converge::push_bundle;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let f = fixture();
    let s = connect(&f.root()).await.unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let stage_leftovers = |b: &TestBundle| -> Vec<String> {
        walk(&b.host_dir())
            .into_iter()
            .filter(|p| p.contains(".kubeup-stage-"))
            .collect()
    };

    // This machine has zstd and tar: both files go in one archive, the big
    // one as its zstd copy (made in the cache), the small one framed now.
    let b = TestBundle::new("archive");
    let cache = CompressedCache::new(cache_dir.path().join("zstd"));
    let c = push_bundle(&s, b.dir.path(), &b.manifest, Some(&cache), None, false)
        .await
        .unwrap();
    assert_eq!(c.uploaded.len(), 2, "{:?}", c.uploaded);
    b.assert_on_host();
    for name in b.manifest.files.keys() {
        let meta = std::fs::metadata(b.host_dir().join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{name}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{name} owned by root");
    }
    assert!(stage_leftovers(&b).is_empty(), "{:?}", stage_leftovers(&b));
    let copies: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().flatten().collect();
    assert_eq!(copies.len(), 1, "one compressed copy: {copies:?}");
    assert!(captured_logs().contains("unpacked"), "went as an archive");
    let again = push_bundle(&s, b.dir.path(), &b.manifest, Some(&cache), None, false)
        .await
        .unwrap();
    assert!(again.uploaded.is_empty(), "{:?}", again.uploaded);

    // A damaged copy: the host's zstd refuses it and its file is not
    // installed.
    let b = TestBundle::new("damaged");
    std::fs::create_dir_all(b.host_dir().join("bin")).unwrap();
    std::fs::write(b.host_dir().join("bin/tiny"), b"old").unwrap();
    let damaged = CompressedCache::new(cache_dir.path().join("damaged"));
    let big = &b.manifest.files["bin/kubenode"];
    let copy = damaged
        .get(&b.dir.path().join("bin/kubenode"), big)
        .await
        .unwrap();
    let mut bytes = std::fs::read(&copy).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&copy, bytes).unwrap();
    let err = push_bundle(&s, b.dir.path(), &b.manifest, Some(&damaged), None, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    assert!(!b.host_dir().join("bin/kubenode").exists());
    // The small file travels in the other stream: old or new, never torn.
    let tiny = std::fs::read(b.host_dir().join("bin/tiny")).unwrap();
    assert!(
        tiny == b"old" || tiny == std::fs::read(b.dir.path().join("bin/tiny")).unwrap(),
        "{tiny:?}"
    );
    assert!(stage_leftovers(&b).is_empty(), "{:?}", stage_leftovers(&b));

    // A host asked to keep the streams (the controller) gets each file on
    // its own channel and keeps what a cache there (the operator's) then
    // uses instead of compressing again.
    let b = TestBundle::new("keep");
    let host_keeps = tempfile::tempdir().unwrap();
    let keep_in = host_keeps.path().to_str().unwrap();
    let c = push_bundle(
        &s,
        b.dir.path(),
        &b.manifest,
        Some(&cache),
        Some(keep_in),
        false,
    )
    .await
    .unwrap();
    assert_eq!(c.uploaded.len(), 2, "{:?}", c.uploaded);
    b.assert_on_host();
    let big = &b.manifest.files["bin/kubenode"];
    let kept = host_keeps.path().join(format!("{}.zst", big.sha256));
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        std::fs::read(copies[0].path()).unwrap()
    );
    let mtime = std::fs::metadata(&kept).unwrap().modified().unwrap();
    let operator_side = CompressedCache::new(host_keeps.path());
    let found = operator_side
        .get(&b.dir.path().join("bin/kubenode"), big)
        .await
        .unwrap();
    assert_eq!(found, kept);
    assert_eq!(std::fs::metadata(&kept).unwrap().modified().unwrap(), mtime);

    // A host without the decoder gets plain files; no copy is made.
    let b = TestBundle::new("plain");
    let cache =
        CompressedCache::new(cache_dir.path().join("none")).with_decoder("kubeup-no-such-decoder");
    let c = push_bundle(&s, b.dir.path(), &b.manifest, Some(&cache), None, false)
        .await
        .unwrap();
    assert_eq!(c.uploaded.len(), 2, "{:?}", c.uploaded);
    b.assert_on_host();
    assert!(
        !cache.dir().exists(),
        "nothing compressed for a host without zstd"
    );
}

/// Three connections, each with a 60 MiB upload, a dozen small uploads,
/// commands streaming output and commands fed stdin, all at once: more
/// channels than `max_channels`, windows filling both ways. Everything
/// finishes, with its bytes. `ROUNDS=n` repeats it (a stress run by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_channels_at_once_on_each_connection_all_finish() {
    let f = fixture();
    let mut o = opts();
    o.command_timeout = Duration::from_secs(60);
    let local_dir = tempfile::tempdir().unwrap();
    let local = local_dir.path().join("big");
    write_pattern(&local, 60 << 20, 7);
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for round in 0..rounds {
        let mut sessions = vec![];
        for _ in 0..3 {
            sessions.push(Arc::new(
                Session::connect(&f.root(), memory(), &o).await.unwrap(),
            ));
        }
        let remote = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let mut uploads = vec![];
        let mut small = vec![];
        for (i, s) in sessions.iter().enumerate() {
            let (s2, local) = (s.clone(), local.clone());
            let dest = remote.path().join(format!("big{i}"));
            uploads.push(tokio::spawn(async move {
                s2.upload(&local, dest.to_str().unwrap(), 0o755, None).await
            }));
            for k in 0..12 {
                let s2 = s.clone();
                let dest = remote.path().join(format!("small{i}-{k}"));
                small.push(tokio::spawn(async move {
                    let data = format!("data {k}\n").repeat(2000);
                    s2.write_file(data.as_bytes(), dest.to_str().unwrap(), 0o600, None)
                        .await?;
                    let streamed = s2
                        .run(&Command::shell(
                            "head -c 300000 /dev/zero | tr '\\0' x; echo done >&2",
                        ))
                        .await?;
                    let fed = s2
                        .run(&Command::shell("wc -c").stdin(vec![b'y'; 200_000]))
                        .await?;
                    Ok::<_, SshError>((streamed, fed, dest, data))
                }));
            }
        }
        for u in uploads {
            let outcome = u
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(outcome, UploadOutcome::Uploaded { bytes: 60 << 20 });
        }
        for t in small {
            let (streamed, fed, dest, data) = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(streamed.stdout.len(), 300_000);
            // The line the command wrote (this machine's root shell may
            // add its own noise before it).
            let stderr = streamed.stderr_str();
            assert!(stderr.ends_with("done\n"), "{stderr}");
            assert_eq!(fed.stdout_str().trim(), "200000");
            assert_eq!(std::fs::read_to_string(dest).unwrap(), data);
        }
        for i in 0..3 {
            assert_eq!(
                std::fs::read(remote.path().join(format!("big{i}"))).unwrap(),
                std::fs::read(&local).unwrap()
            );
        }
        eprintln!("round {round}: {:?}", started.elapsed());
    }
}

/// A bundle pushed in shares (a controller's control-plane binaries first,
/// then the rest) is stamped whole only by the last share, and
/// `bundle_in_place` reads that stamp and the symlinks: false before, true
/// after, false again once a link or a file changes.
#[tokio::test]
async fn a_bundle_pushed_in_shares_is_in_place_only_once_whole() {
    use kubeup_provision::converge::{Part, bundle_in_place, push_bundle_part};

    let f = fixture();
    let s = connect(&f.root()).await.unwrap();
    let mut b = TestBundle::new("shares");
    b.manifest
        .symlinks
        .insert("bin/kubelet".into(), "kubenode".into());
    assert!(!bundle_in_place(&s, &b.manifest).await.unwrap());

    let first = |name: &str| name == "bin/tiny";
    let rest = |name: &str| name != "bin/tiny";
    let push = |part| push_bundle_part(&s, b.dir.path(), &b.manifest, None, None, false, part);
    let c = push(Part {
        covers: &first,
        last: false,
    })
    .await
    .unwrap();
    assert!(c.uploaded.iter().any(|p| p.ends_with("bin/tiny")), "{c:?}");
    assert!(
        !c.uploaded.iter().any(|p| p.ends_with("bin/kubenode")),
        "{c:?}"
    );
    assert!(
        !bundle_in_place(&s, &b.manifest).await.unwrap(),
        "half a bundle is not in place"
    );
    let c = push(Part {
        covers: &rest,
        last: true,
    })
    .await
    .unwrap();
    assert!(
        c.uploaded.iter().any(|p| p.ends_with("bin/kubenode")),
        "{c:?}"
    );
    b.assert_on_host();
    assert!(bundle_in_place(&s, &b.manifest).await.unwrap());

    // A link gone, then a file rewritten: no longer in place.
    std::fs::remove_file(b.host_dir().join("bin/kubelet")).unwrap();
    assert!(!bundle_in_place(&s, &b.manifest).await.unwrap());
    std::os::unix::fs::symlink("kubenode", b.host_dir().join("bin/kubelet")).unwrap();
    assert!(bundle_in_place(&s, &b.manifest).await.unwrap());
    std::fs::write(b.host_dir().join("bin/tiny"), b"#!/bin/sh\necho other\n").unwrap();
    assert!(!bundle_in_place(&s, &b.manifest).await.unwrap());
}
