//! A real OpenSSH `sshd` for tests, on loopback with a random port, a
//! temporary config and temporary host keys; stopped (by PID) on drop, even
//! when the test panics. Plus the pieces SSH tests need around it: user keys
//! (`ssh-keygen`), an `ssh-agent`, idempotent test users with sudoers rules,
//! and an iptables rule that lets only one user reach a port.
//!
//! Needs root, `/usr/sbin/sshd` (openssh-server), `ssh-keygen`, `ssh-agent`,
//! `ssh-add` (openssh-client), `sudo`, `useradd` and, for
//! [`PortOnlyForUser`], `iptables`. A missing piece is an error naming it —
//! tests fail with the reason instead of passing silently.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const SSHD: &str = "/usr/sbin/sshd";

/// A key pair made by `ssh-keygen` in a temp directory.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private: PathBuf,
    /// The OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
    pub public: String,
}

impl KeyPair {
    pub fn private_pem(&self) -> String {
        fs::read_to_string(&self.private).expect("read private key")
    }
}

/// `ssh-keygen -t <kind>` (kind: `ed25519`, `ecdsa`, `rsa`) into `dir/name`.
pub fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> Result<KeyPair> {
    let private = dir.join(name);
    let _ = fs::remove_file(&private);
    let _ = fs::remove_file(private.with_extension("pub"));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
        .arg(&private);
    if kind == "rsa" {
        cmd.args(["-b", "3072"]);
    }
    run(&mut cmd).context("ssh-keygen (install openssh-client)")?;
    let public = fs::read_to_string(dir.join(format!("{name}.pub")))?
        .trim()
        .to_owned();
    Ok(KeyPair { private, public })
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How to start an [`Sshd`].
#[derive(Debug, Clone)]
pub struct SshdBuilder {
    listen: String,
    extra: Vec<String>,
}

impl Default for SshdBuilder {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1".into(),
            extra: vec![],
        }
    }
}

impl SshdBuilder {
    /// Listen address (any of 127.0.0.0/8 works on Linux without setup).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.into();
        self
    }

    /// An extra sshd_config line (appended; `Match` blocks go last).
    pub fn config(mut self, line: &str) -> Self {
        self.extra.push(line.into());
        self
    }

    pub fn start(self) -> Result<Sshd> {
        if !Path::new(SSHD).exists() {
            bail!("{SSHD} not found: install openssh-server (hack/apt/ssh.txt)");
        }
        // Privilege separation directory, absent when sshd never ran here.
        fs::create_dir_all("/run/sshd").context("create /run/sshd (tests need root)")?;
        let dir = tempfile::Builder::new().prefix("kubeup-sshd-").tempdir()?;
        // sshd reads authorized_keys as the (non-root) user: the directory
        // must be traversable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        fs::create_dir(dir.path().join("authorized_keys"))?;
        fs::set_permissions(
            dir.path().join("authorized_keys"),
            fs::Permissions::from_mode(0o755),
        )?;
        let mut sshd = Sshd {
            child: None,
            dir,
            port: 0,
            listen: self.listen,
            extra: self.extra,
        };
        sshd.generate_host_keys()?;
        sshd.launch(None)?;
        Ok(sshd)
    }
}

/// A running sshd. Dropping it kills the daemon.
#[derive(Debug)]
pub struct Sshd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    listen: String,
    extra: Vec<String>,
}

const HOST_KEY_KINDS: [&str; 3] = ["ed25519", "ecdsa", "rsa"];

impl Sshd {
    /// Default sshd on 127.0.0.1.
    pub fn start() -> Result<Sshd> {
        SshdBuilder::default().start()
    }

    pub fn builder() -> SshdBuilder {
        SshdBuilder::default()
    }

    pub fn address(&self) -> &str {
        &self.listen
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp directory (config, keys, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The host public key of `kind` (`ed25519`, `ecdsa`, `rsa`) as an
    /// OpenSSH line.
    pub fn host_key(&self, kind: &str) -> String {
        fs::read_to_string(self.dir().join(format!("ssh_host_{kind}_key.pub")))
            .expect("host key")
            .trim()
            .to_owned()
    }

    /// `SHA256:…` of a host key, as `ssh-keygen -lf` prints it.
    pub fn host_key_fingerprint(&self, kind: &str) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir().join(format!("ssh_host_{kind}_key.pub"))))
        .expect("ssh-keygen -lf");
        out.split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_owned()
    }

    /// Allow `public` (an OpenSSH public key line, optionally with options
    /// such as `from="…"`) to log in as `user`.
    pub fn authorize(&self, user: &str, public: &str) -> Result<()> {
        let path = self.dir().join("authorized_keys").join(user);
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(f, "{public}")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// sshd's own log (`-e`), for assertions and debugging.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }

    /// Stop, make new host keys, start again on the same port: what a
    /// reinstalled machine (or an attacker) looks like to a client.
    pub fn restart_with_new_host_keys(&mut self) -> Result<()> {
        self.stop();
        self.generate_host_keys()?;
        let port = self.port;
        self.launch(Some(port))
    }

    /// Stop the daemon (connections already open keep their own processes).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port with the same keys.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let port = self.port;
        self.launch(Some(port))
    }

    fn generate_host_keys(&self) -> Result<()> {
        for kind in HOST_KEY_KINDS {
            keygen(self.dir(), &format!("ssh_host_{kind}_key"), kind, "")?;
        }
        Ok(())
    }

    fn write_config(&self, port: u16) -> Result<PathBuf> {
        let d = self.dir().display().to_string();
        let mut cfg = format!(
            "Port {port}\n\
             ListenAddress {listen}\n\
             HostKey {d}/ssh_host_ed25519_key\n\
             HostKey {d}/ssh_host_ecdsa_key\n\
             HostKey {d}/ssh_host_rsa_key\n\
             PidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys/%u\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             UsePAM no\n\
             StrictModes no\n\
             AllowTcpForwarding yes\n\
             MaxSessions 10\n\
             MaxStartups 100:30:200\n\
             LogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\n",
            listen = self.listen
        );
        for line in &self.extra {
            cfg.push_str(line);
            cfg.push('\n');
        }
        let path = self.dir().join("sshd_config");
        fs::write(&path, cfg)?;
        Ok(path)
    }

    /// Start sshd; with `port: None` pick a free one (retrying if another
    /// process grabs it between our probe and sshd's bind).
    fn launch(&mut self, port: Option<u16>) -> Result<()> {
        let mut last_err = None;
        for _ in 0..if port.is_some() { 1 } else { 5 } {
            let port = match port {
                Some(p) => p,
                None => TcpListener::bind((self.listen.as_str(), 0))?
                    .local_addr()?
                    .port(),
            };
            let config = self.write_config(port)?;
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir().join("sshd.log"))?;
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("failed to start sshd")?;
            match wait_listening(&self.listen, port, &mut child) {
                Ok(()) => {
                    self.child = Some(child);
                    self.port = port;
                    return Ok(());
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(e.context(format!("sshd log:\n{}", self.log())));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("sshd did not start")))
    }
}

fn wait_listening(addr: &str, port: u16, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("sshd exited at start with {status}");
        }
        if TcpStream::connect((addr, port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("sshd not listening on {addr}:{port} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private `ssh-agent`; killed on drop.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Result<Agent> {
        let dir = tempfile::Builder::new().prefix("kubeup-agent-").tempdir()?;
        let socket = dir.path().join("agent.sock");
        let mut child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start ssh-agent (install openssh-client)")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if child.try_wait()?.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                bail!("ssh-agent did not create {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Agent {
            child,
            socket,
            _dir: dir,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn add(&self, key: &Path) -> Result<()> {
        run(Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &self.socket)
            .arg("-q")
            .arg(key))
        .map(drop)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Create (idempotently; safe when several tests race) a local user that
/// can log in with a key: no usable password unless `password` is given
/// (`*`, not `!`: a locked account is refused by sshd even for keys), an
/// optional sudoers rule in `/etc/sudoers.d/`.
pub fn ensure_user(name: &str, password: Option<&str>, sudoers: Option<&str>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if run(Command::new("id").arg("-u").arg(name)).is_ok() {
            break;
        }
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh"])
            .arg(name)
            .output()
            .context("useradd (tests need root and the passwd package)")?;
        // 9: exists (another test won the race); 10: /etc/passwd locked by
        // a concurrent useradd — try again.
        match out.status.code() {
            Some(0) | Some(9) => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => bail!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    let entry = match password {
        Some(p) => format!("{name}:{p}"),
        None => format!("{name}:*"),
    };
    let mut args = vec![];
    if password.is_none() {
        args.push("-e"); // the '*' is an already-"encrypted" value
    }
    retry(|| {
        let mut child = Command::new("chpasswd")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{entry}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("chpasswd: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    })?;
    if let Some(rule) = sudoers {
        let path = format!("/etc/sudoers.d/kubeup-test-{name}");
        let tmp = format!("/etc/sudoers.d/.kubeup-test-{name}.{}", std::process::id());
        fs::write(&tmp, format!("{rule}\n"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o440))?;
        // Atomic: a concurrent sudo never sees a half-written file.
        fs::rename(&tmp, &path)?;
    }
    Ok(())
}

fn retry(mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// An iptables rule: TCP connections to `addr:port` are reset unless the
/// connecting process runs as `user`. Removed on drop.
///
/// On loopback every connection comes from 127.0.0.1, so addresses cannot
/// tell the bastion's sshd from the test itself; the owner of the socket
/// can: sshd opens `direct-tcpip` connections from the session process,
/// which runs as the logged-in user.
#[derive(Debug)]
pub struct PortOnlyForUser {
    rule: Vec<String>,
}

impl PortOnlyForUser {
    pub fn new(addr: &str, port: u16, user: &str) -> Result<Self> {
        let rule: Vec<String> = [
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "tcp",
            "-d",
            addr,
            "--dport",
            &port.to_string(),
            "-m",
            "owner",
            "!",
            "--uid-owner",
            user,
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run(Command::new("iptables").arg("-w").arg("-I").args(&rule))
            .context("iptables (install the iptables package)")?;
        Ok(Self { rule })
    }
}

impl Drop for PortOnlyForUser {
    fn drop(&mut self) {
        let _ = run(Command::new("iptables")
            .arg("-w")
            .arg("-D")
            .args(&self.rule));
    }
}
