//! One SSH connection to one host, reused for every command (one channel
//! each), re-established with backoff when it drops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeup_crds::host::{HostKeyPolicy, HostKeyTrust};
use russh::client;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{
    Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{ChannelMsg, ChannelWriteHalf, Sig};
use tokio::sync::{Mutex, OnceCell};

use super::command::{Command, Output};
use super::error::{Result, SshError};
use super::hostkey::{HostKeyStore, Verifier, fingerprint};
use super::secret::Secret;
use crate::text::truncate_chars;

/// How to authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A private key file (OpenSSH, PKCS#1/PKCS#8 PEM); `passphrase` for an
    /// encrypted one.
    KeyFile {
        path: std::path::PathBuf,
        passphrase: Option<Secret>,
    },
    /// Private key text, e.g. the `ssh-privatekey` of a
    /// `kubernetes.io/ssh-auth` Secret.
    KeyData {
        pem: Secret,
        passphrase: Option<Secret>,
    },
    /// The identities of the running ssh-agent (`SSH_AUTH_SOCK`).
    Agent,
    /// The identities of the ssh-agent listening on this socket.
    AgentSocket(std::path::PathBuf),
}

/// A host to reach.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// IP address or DNS name (as seen from the bastion, if there is one).
    pub address: String,
    pub port: u16,
    pub user: String,
    pub auth: Auth,
    pub host_key: HostKeyTrust,
    /// For a non-root `user` whose sudo asks for a password. Fed to
    /// `sudo -S` on stdin; never on a command line, never logged.
    pub sudo_password: Option<Secret>,
    /// Jump host: the target is reached through a `direct-tcpip` channel of
    /// a connection to it. Its own host key is verified with its own trust.
    pub bastion: Option<Box<SshTarget>>,
}

impl SshTarget {
    pub fn new(address: impl Into<String>, port: u16, user: impl Into<String>, auth: Auth) -> Self {
        Self {
            address: address.into(),
            port,
            user: user.into(),
            auth,
            host_key: HostKeyTrust::default(),
            sudo_password: None,
            bastion: None,
        }
    }

    /// A target at `endpoint` (a controller, a WorkerJoin's machine, a
    /// bastion), its host key trusted as the endpoint says.
    pub fn reach(endpoint: kubeup_crds::host::Endpoint<'_>, auth: Auth) -> Self {
        let mut t = Self::new(endpoint.address, endpoint.port, endpoint.user, auth);
        t.host_key = endpoint.host_key.clone();
        t
    }

    /// `host:port`
    pub fn addr(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// `user@host:port`, the `host` field of every log line.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

/// Timeouts, keepalive and reconnect policy.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// TCP connect + SSH handshake (host key check included).
    pub connect_timeout: Duration,
    pub auth_timeout: Duration,
    /// Default limit for one command; [`Command::timeout`] overrides it.
    pub command_timeout: Duration,
    /// An upload whose bytes the host stops taking for this long has
    /// stalled: it fails (and is retried) instead of waiting out the
    /// command timeout.
    pub stall_timeout: Duration,
    /// Keepalive after this much silence from the server…
    pub keepalive_interval: Duration,
    /// …and give the connection up after this many unanswered ones.
    pub keepalive_max: usize,
    /// Channels open at once on one connection. OpenSSH's `MaxSessions`
    /// defaults to 10; staying under it leaves room for channels sshd has
    /// not finished closing.
    pub max_channels: usize,
    /// Attempts to re-establish a dropped connection before giving up.
    pub reconnect_attempts: u32,
    /// First backoff between attempts; doubles up to `reconnect_backoff_max`.
    pub reconnect_backoff: Duration,
    pub reconnect_backoff_max: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(20),
            auth_timeout: Duration::from_secs(20),
            command_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            max_channels: 8,
            reconnect_attempts: 4,
            reconnect_backoff: Duration::from_millis(250),
            reconnect_backoff_max: Duration::from_secs(8),
        }
    }
}

/// Handler error: russh's, or our verdict on the host key.
#[derive(Debug)]
pub(crate) enum HandlerError {
    Russh(russh::Error),
    HostKey(SshError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Russh(e)
    }
}

struct Client {
    verifier: Verifier,
    seen: Arc<std::sync::Mutex<Option<PublicKey>>>,
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                // The verdict is the verifier's: Ok only for a pinned,
                // recorded or (accept-new, first contact) just-recorded key.
                self.verifier.verify(key).map_err(HandlerError::HostKey)?;
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
                Ok(true)
            }
            PublicKeyOrCertificate::Certificate(_) => {
                Err(HandlerError::HostKey(SshError::HostCertificate {
                    addr: format!("{}:{}", self.verifier.host, self.verifier.port),
                }))
            }
        }
    }
}

/// An authenticated connection (and the bastion connection carrying it).
struct Conn {
    handle: client::Handle<Client>,
    host_key: PublicKey,
    // Kept alive for as long as the tunnelled connection is used; its
    // verified host key is reported apart from the target's.
    bastion: Option<Arc<Conn>>,
}

/// How privileged commands are run, decided once per session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SudoMode {
    Root,
    NoPassword,
    Password,
}

/// A connection to one host. Cheap to share (`&self` everywhere): commands
/// from several tasks run concurrently on channels of one connection.
pub struct Session {
    target: SshTarget,
    store: Arc<dyn HostKeyStore>,
    opts: SshOptions,
    label: String,
    conn: Mutex<Option<Arc<Conn>>>,
    sudo: OnceCell<SudoMode>,
    /// Permits for [`SshOptions::max_channels`] open channels.
    channels: tokio::sync::Semaphore,
}

/// Times a refused channel open is retried (sshd's `MaxSessions`).
const CHANNEL_OPEN_RETRIES: u32 = 5;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.label)
            .finish()
    }
}

impl Session {
    /// Connect, verify the host key (and the bastion's), authenticate.
    pub async fn connect(
        target: &SshTarget,
        store: Arc<dyn HostKeyStore>,
        opts: &SshOptions,
    ) -> Result<Session> {
        let conn = establish(target, &store, opts).await?;
        Ok(Session {
            target: target.clone(),
            store,
            opts: opts.clone(),
            label: target.label(),
            conn: Mutex::new(Some(Arc::new(conn))),
            sudo: OnceCell::new(),
            channels: tokio::sync::Semaphore::new(opts.max_channels.max(1)),
        })
    }

    /// `user@host:port`
    pub fn host(&self) -> &str {
        &self.label
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    pub fn options(&self) -> &SshOptions {
        &self.opts
    }

    /// `SHA256:…` of the host key verified on the current connection.
    pub async fn host_key_fingerprint(&self) -> Option<String> {
        self.conn
            .lock()
            .await
            .as_ref()
            .map(|c| fingerprint(&c.host_key))
    }

    /// The verified host key as an OpenSSH public key line (for status).
    pub async fn host_key_openssh(&self) -> Option<String> {
        self.conn.lock().await.as_ref().and_then(|c| {
            PublicKey::new(c.host_key.key_data().clone(), "")
                .to_openssh()
                .ok()
        })
    }

    /// `SHA256:…` of the bastion's host key verified on the current
    /// connection; `None` without a bastion (or a connection).
    pub async fn bastion_host_key_fingerprint(&self) -> Option<String> {
        let conn = self.conn.lock().await;
        let bastion = conn.as_ref()?.bastion.as_ref()?;
        Some(fingerprint(&bastion.host_key))
    }

    /// The bastion's verified host key as an OpenSSH public key line, for a
    /// caller that records it apart from the target's (the operator's
    /// status); `None` without a bastion (or a connection).
    pub async fn bastion_host_key_openssh(&self) -> Option<String> {
        let conn = self.conn.lock().await;
        let bastion = conn.as_ref()?.bastion.as_ref()?;
        PublicKey::new(bastion.host_key.key_data().clone(), "")
            .to_openssh()
            .ok()
    }

    /// Close the connection (a later command reconnects).
    pub async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    /// The live connection, re-established with backoff if it dropped.
    async fn connection(&self) -> Result<Arc<Conn>> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref()
            && !conn.handle.is_closed()
        {
            return Ok(conn.clone());
        }
        *guard = None;
        let mut delay = self.opts.reconnect_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match establish(&self.target, &self.store, &self.opts).await {
                Ok(conn) => {
                    tracing::info!(host = %self.label, attempt, "reconnected");
                    let conn = Arc::new(conn);
                    *guard = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) if e.is_permanent() || attempt >= self.opts.reconnect_attempts => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(host = %self.label, attempt, error = %e, retry_in = ?delay, "reconnect failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.opts.reconnect_backoff_max);
                }
            }
        }
    }

    /// A new session channel, with the permit that counts it against
    /// [`SshOptions::max_channels`] (hold it as long as the channel).
    /// Reconnects once if the connection turns out to be dead. Commands
    /// themselves are never re-sent: they may not be idempotent.
    pub(crate) async fn open_channel(
        &self,
        doing: &str,
    ) -> Result<(
        russh::Channel<client::Msg>,
        tokio::sync::SemaphorePermit<'_>,
    )> {
        // The semaphore is never closed; were it, the connection is as good as lost.
        let permit = self
            .channels
            .acquire()
            .await
            .map_err(|_| SshError::Disconnected {
                host: self.label.clone(),
                command: doing.to_owned(),
            })?;
        let channel_err = |source| SshError::Channel {
            host: self.label.clone(),
            doing: doing.to_owned(),
            source: Box::new(source),
        };
        // An open the host never answers must not hang its caller: the
        // connection is then treated as lost, and one new one is tried.
        let wait = self.opts.connect_timeout;
        let open_timeout = || SshError::CommandTimeout {
            host: self.label.clone(),
            command: format!("{doing} (opening a channel)"),
            after: wait,
        };
        let conn = self.connection().await?;
        let mut refused = 0;
        let lost = loop {
            match open_within(&conn.handle, wait).await {
                Some(Ok(ch)) => return Ok((ch, permit)),
                None => {
                    tracing::warn!(host = %self.label, after = ?wait, "a channel open went unanswered; reconnecting");
                    break conn;
                }
                Some(Err(e)) if conn.handle.is_closed() || matches!(e, russh::Error::SendError) => {
                    tracing::debug!(host = %self.label, error = %e, "connection dropped; reconnecting");
                    break conn;
                }
                // sshd refuses a session over its MaxSessions; channels we
                // closed a moment ago may still count there. Wait for them.
                Some(Err(russh::Error::ChannelOpenFailure(reason)))
                    if refused < CHANNEL_OPEN_RETRIES =>
                {
                    refused += 1;
                    tracing::debug!(host = %self.label, ?reason, refused, "channel refused; retrying");
                    tokio::time::sleep(Duration::from_millis(50) * refused).await;
                }
                Some(Err(source)) => return Err(channel_err(source)),
            }
        };
        // Forget the lost connection (unless another caller already did)
        // and try one new one.
        {
            let mut guard = self.conn.lock().await;
            if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, &lost)) {
                *guard = None;
            }
        }
        let conn = self.connection().await?;
        let ch = open_within(&conn.handle, wait)
            .await
            .ok_or_else(open_timeout)?
            .map_err(channel_err)?;
        Ok((ch, permit))
    }

    /// Run and return the output whatever the exit status.
    pub async fn output(&self, cmd: &Command) -> Result<Output> {
        cmd.check()?;
        let (line, prefix) = self.command_line(cmd).await?;
        let stdin = cmd.stdin.as_deref().unwrap_or_default();
        self.exec_raw(&line, &cmd.display(), prefix, Some(stdin), cmd.timeout)
            .await
    }

    /// Run; a non-zero exit status is an error naming host, command, status
    /// and the tail of stderr.
    pub async fn run(&self, cmd: &Command) -> Result<Output> {
        let out = self.output(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(self.failed(&cmd.display(), &out))
        }
    }

    /// [`Session::run`] as root (sudo for non-root users).
    pub async fn run_privileged(&self, cmd: &Command) -> Result<Output> {
        self.run(&cmd.clone().privileged()).await
    }

    pub(crate) fn failed(&self, command: &str, out: &Output) -> SshError {
        SshError::CommandFailed {
            host: self.label.clone(),
            command: command.to_owned(),
            status: out.status_text(),
            stderr_tail: out.stderr_tail(),
        }
    }

    /// The command line to send, and the bytes (sudo password) to put on
    /// stdin before the command's own.
    pub(crate) async fn command_line(&self, cmd: &Command) -> Result<(String, Option<Vec<u8>>)> {
        if !cmd.privileged {
            return Ok((cmd.script().to_owned(), None));
        }
        self.wrap_privileged(cmd.script()).await
    }

    pub(crate) async fn wrap_privileged(&self, script: &str) -> Result<(String, Option<Vec<u8>>)> {
        let mode = *self.sudo.get_or_try_init(|| self.probe_sudo()).await?;
        let quoted = super::command::quote(script)?;
        Ok(match mode {
            SudoMode::Root => (script.to_owned(), None),
            SudoMode::NoPassword => (format!("sudo -n -- sh -c {quoted}"), None),
            // -k: ignore cached credentials so sudo always reads the
            // password line, which therefore never leaks into the
            // command's own stdin. -p '': no prompt text in stderr.
            SudoMode::Password => (
                format!("sudo -S -k -p '' -- sh -c {quoted}"),
                Some(self.sudo_password_line()),
            ),
        })
    }

    fn sudo_password_line(&self) -> Vec<u8> {
        let mut line = self
            .target
            .sudo_password
            .as_ref()
            .map(|p| p.expose().as_bytes().to_vec())
            .unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Root runs as is; otherwise find out once whether sudo works without
    /// a password, needs the one we have, or cannot be used.
    async fn probe_sudo(&self) -> Result<SudoMode> {
        if self.target.user == "root" {
            return Ok(SudoMode::Root);
        }
        let user = self.target.user.clone();
        let host = self.target.address.clone();
        let probe = "LC_ALL=C sudo -n true";
        let out = self.exec_raw(probe, probe, None, None, None).await?;
        if out.success() {
            return Ok(SudoMode::NoPassword);
        }
        let stderr = out.stderr_tail();
        if !stderr.contains("password is required") {
            return Err(SshError::SudoFailed {
                user,
                host,
                stderr_tail: stderr,
            });
        }
        if self.target.sudo_password.is_none() {
            return Err(SshError::SudoNeedsPassword { user, host });
        }
        let check = "LC_ALL=C sudo -S -k -p '' true";
        let out = self
            .exec_raw(check, check, Some(self.sudo_password_line()), None, None)
            .await?;
        if out.success() {
            Ok(SudoMode::Password)
        } else if out.stderr_tail().contains("incorrect password")
            || out.stderr_tail().contains("Sorry, try again")
        {
            Err(SshError::SudoPasswordRejected { user, host })
        } else {
            Err(SshError::SudoFailed {
                user,
                host,
                stderr_tail: out.stderr_tail(),
            })
        }
    }

    /// Exec `line` on a new channel, send `prefix` + `stdin` and close
    /// stdin, read stdout/stderr until the channel closes (logging each line
    /// with the host), keep the exit status. `stdin: None` leaves stdin open
    /// but empty (closed right away too).
    async fn exec_raw(
        &self,
        line: &str,
        shown: &str,
        prefix: Option<Vec<u8>>,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Output> {
        let shown = truncate_chars(shown, 300);
        let (channel, _permit) = self.open_channel(&format!("running `{shown}`")).await?;
        let (mut rx, tx) = channel.split();
        let timeout = timeout.unwrap_or(self.opts.command_timeout);
        tracing::debug!(host = %self.label, command = %shown, "run");
        let started = Instant::now();
        let chan_err = |source| SshError::Channel {
            host: self.label.clone(),
            doing: format!("running `{shown}`"),
            source: Box::new(source),
        };
        let work = async {
            tx.exec(true, line.as_bytes()).await.map_err(chan_err)?;
            let send = async {
                if let Some(p) = prefix {
                    tx.data_bytes(p).await?;
                }
                if let Some(data) = stdin
                    && !data.is_empty()
                {
                    tx.data_bytes(data.to_vec()).await?;
                }
                tx.eof().await
            };
            let recv = read_channel(&mut rx, &self.label);
            tokio::pin!(send, recv);
            // A command may exit without reading all of its stdin: once the
            // channel is closed, stop sending.
            let (sent, out) = tokio::select! {
                out = &mut recv => (Ok(()), out),
                sent = &mut send => (sent, recv.await),
            };
            // A command that exits without reading its stdin makes the send
            // fail; its exit status is what matters then.
            if let Err(e) = sent {
                tracing::trace!(host = %self.label, error = %e, "stdin not fully sent");
            }
            Ok::<_, SshError>(out)
        };
        let out = match tokio::time::timeout(timeout, work).await {
            Ok(out) => out?,
            Err(_) => {
                kill(&tx).await;
                return Err(SshError::CommandTimeout {
                    host: self.label.clone(),
                    command: shown,
                    after: timeout,
                });
            }
        };
        if out.exit_status.is_none() && out.exit_signal.is_none() {
            return Err(SshError::Disconnected {
                host: self.label.clone(),
                command: shown,
            });
        }
        tracing::debug!(host = %self.label, command = %shown, status = %out.status_text(), elapsed = ?started.elapsed(), "done");
        Ok(out)
    }
}

/// Best effort: ask sshd to kill the command, then close the channel.
pub(crate) async fn kill(tx: &ChannelWriteHalf<client::Msg>) {
    let _ = tx.signal(Sig::KILL).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// Read a channel until it closes: stdout, stderr (each line logged at
/// debug with the host), exit status or signal.
pub(crate) async fn read_channel(rx: &mut russh::ChannelReadHalf, host: &str) -> Output {
    let mut out = Output::default();
    let (mut out_pos, mut err_pos) = (0usize, 0usize);
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                out.stdout.extend_from_slice(&data);
                log_lines(host, "stdout", &out.stdout, &mut out_pos, false);
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                out.stderr.extend_from_slice(&data);
                log_lines(host, "stderr", &out.stderr, &mut err_pos, false);
            }
            ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                out.exit_signal = Some(format!("{signal_name:?}"))
            }
            _ => {}
        }
    }
    log_lines(host, "stdout", &out.stdout, &mut out_pos, true);
    log_lines(host, "stderr", &out.stderr, &mut err_pos, true);
    out
}

/// Emit the complete lines of `buf` after `pos` (all of it when `flush`).
fn log_lines(host: &str, stream: &'static str, buf: &[u8], pos: &mut usize, flush: bool) {
    while let Some(rest) = buf.get(*pos..).filter(|r| !r.is_empty()) {
        let (line, used) = match rest.split(|&b| b == b'\n').next() {
            Some(line) if line.len() < rest.len() => (line, line.len() + 1),
            _ if flush => (rest, rest.len()),
            _ => return,
        };
        *pos += used;
        tracing::debug!(host, stream, "{}", String::from_utf8_lossy(line));
    }
}

/// Connect to `target` (through its bastion, if any), verify, authenticate.
fn establish<'a>(
    target: &'a SshTarget,
    store: &'a Arc<dyn HostKeyStore>,
    opts: &'a SshOptions,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Conn>> + Send + 'a>> {
    Box::pin(async move {
        let bastion = match &target.bastion {
            Some(b) => Some(Arc::new(establish(b, store, opts).await?)),
            None => None,
        };
        let addr = target.addr();
        let verifier = Verifier {
            host: target.address.clone(),
            port: target.port,
            trust: target.host_key.clone(),
            store: store.clone(),
        };
        // A `SHA256:` pin does not say which of the host's keys it is: when
        // the first key presented does not match, ask for each other key
        // type in turn (as `ssh -o HostKeyAlgorithms=…` would) before
        // calling it a mismatch. Other policies negotiate once.
        let mut key_sets = vec![verifier.preferred_algorithms()];
        if let (HostKeyPolicy::Pin, Some(pin)) = (target.host_key.policy, &target.host_key.key)
            && pin.trim().starts_with("SHA256:")
        {
            key_sets.extend(fallback_key_sets());
        }
        let mut first_err = None;
        let mut connected = None;
        for (i, algorithms) in key_sets.into_iter().enumerate() {
            let verifier = Verifier {
                host: target.address.clone(),
                port: target.port,
                trust: target.host_key.clone(),
                store: store.clone(),
            };
            match handshake(target, bastion.as_ref(), verifier, algorithms, opts).await {
                Ok(c) => {
                    connected = Some(c);
                    break;
                }
                // Retry only a pin mismatch, or (later sets) a host without
                // that key type.
                Err(e @ SshError::HostKeyMismatch { .. }) => {
                    first_err.get_or_insert(e);
                }
                Err(SshError::Handshake { .. }) if i > 0 => {}
                Err(e) => return Err(first_err.unwrap_or(e)),
            }
        }
        let Some((mut handle, host_key)) = connected else {
            return Err(first_err.unwrap_or_else(|| SshError::Protocol {
                host: addr.clone(),
                command: "handshake".into(),
                reason: "no host key was verified".into(),
            }));
        };
        tokio::time::timeout(opts.auth_timeout, authenticate(&mut handle, target))
            .await
            .map_err(|_| SshError::AuthTimeout {
                addr: addr.clone(),
                user: target.user.clone(),
                after: opts.auth_timeout,
            })??;
        tracing::debug!(host = %target.label(), fingerprint = %fingerprint(&host_key), "connected");
        Ok(Conn {
            handle,
            host_key,
            bastion,
        })
    })
}

/// One transport handshake (TCP or bastion channel, key exchange, host-key
/// verdict) offering `algorithms` as host-key types.
async fn handshake(
    target: &SshTarget,
    bastion: Option<&Arc<Conn>>,
    verifier: Verifier,
    algorithms: Vec<Algorithm>,
    opts: &SshOptions,
) -> Result<(client::Handle<Client>, PublicKey)> {
    let addr = target.addr();
    let preferred = russh::Preferred {
        key: algorithms.into(),
        cipher: preferred_ciphers().into(),
        ..Default::default()
    };
    let config = Arc::new(client::Config {
        keepalive_interval: Some(opts.keepalive_interval),
        keepalive_max: opts.keepalive_max,
        nodelay: true,
        preferred,
        // Bigger receive window: fewer stalls when a command streams a lot
        // of output (russh default is 2 MiB).
        window_size: 8 * 1024 * 1024,
        ..Default::default()
    });
    let seen = Arc::new(std::sync::Mutex::new(None));
    let handler = Client {
        verifier,
        seen: seen.clone(),
    };
    let map_handler = |e: HandlerError| match e {
        HandlerError::HostKey(e) => e,
        HandlerError::Russh(russh::Error::IO(source)) => SshError::Connect {
            addr: addr.clone(),
            source,
        },
        HandlerError::Russh(source) => SshError::Handshake {
            addr: addr.clone(),
            source: Box::new(source),
        },
    };
    let connecting = async {
        match bastion {
            None => {
                let stream = tokio::net::TcpStream::connect((target.address.as_str(), target.port))
                    .await
                    .map_err(|source| SshError::Connect {
                        addr: addr.clone(),
                        source,
                    })?;
                let _ = stream.set_nodelay(true);
                client::connect_stream(config, stream, handler)
                    .await
                    .map_err(map_handler)
            }
            Some(b) => {
                let bastion_addr = target
                    .bastion
                    .as_deref()
                    .map(SshTarget::addr)
                    .unwrap_or_default();
                let channel = b
                    .handle
                    .channel_open_direct_tcpip(
                        target.address.clone(),
                        target.port.into(),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|source| SshError::Tunnel {
                        bastion: bastion_addr,
                        target: addr.clone(),
                        source: Box::new(source),
                    })?;
                client::connect_stream(config, channel.into_stream(), handler)
                    .await
                    .map_err(map_handler)
            }
        }
    };
    let handle = tokio::time::timeout(opts.connect_timeout, connecting)
        .await
        .map_err(|_| SshError::ConnectTimeout {
            addr: addr.clone(),
            after: opts.connect_timeout,
        })??;
    let host_key = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        // connect_stream only returns Ok after check_server_key said yes.
        .ok_or_else(|| SshError::Protocol {
            host: addr.clone(),
            command: "handshake".into(),
            reason: "no host key was verified".into(),
        })?;
    Ok((handle, host_key))
}

/// With AES instructions AES-GCM encrypts several times faster than
/// ChaCha20-Poly1305, and uploads of hundreds of MB are bound by exactly
/// that; without them ChaCha20 stays first. Both are AEAD, so nothing is
/// traded for speed.
fn preferred_ciphers() -> Vec<russh::cipher::Name> {
    use russh::cipher::{AES_128_CTR, AES_192_CTR, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    #[cfg(target_arch = "x86_64")]
    let aes = std::arch::is_x86_feature_detected!("aes");
    #[cfg(target_arch = "aarch64")]
    let aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes = false;
    let aead = if aes {
        [AES_256_GCM, CHACHA20_POLY1305]
    } else {
        [CHACHA20_POLY1305, AES_256_GCM]
    };
    aead.into_iter()
        .chain([AES_256_CTR, AES_192_CTR, AES_128_CTR])
        .collect()
}

/// A session channel, or `None` when the host did not answer within `wait`.
async fn open_within(
    handle: &client::Handle<Client>,
    wait: Duration,
) -> Option<std::result::Result<russh::Channel<client::Msg>, russh::Error>> {
    tokio::time::timeout(wait, handle.channel_open_session())
        .await
        .ok()
}

/// Host-key types other than the first choice, one family at a time.
fn fallback_key_sets() -> Vec<Vec<Algorithm>> {
    use russh::keys::EcdsaCurve;
    vec![
        vec![Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        }],
        vec![Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        }],
        vec![Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        }],
        vec![
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ],
    ]
}

pub(crate) fn decode_key(
    text: &str,
    passphrase: Option<&Secret>,
    label: &str,
) -> Result<PrivateKey> {
    russh::keys::decode_secret_key(text, passphrase.map(Secret::expose)).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => SshError::KeyEncrypted {
            key: label.to_owned(),
        },
        // Never format the key itself; russh's messages name only the kind.
        other => SshError::Key {
            key: label.to_owned(),
            reason: if passphrase.is_some() {
                format!("{other} (wrong passphrase?)")
            } else {
                other.to_string()
            },
        },
    })
}

async fn authenticate(handle: &mut client::Handle<Client>, target: &SshTarget) -> Result<()> {
    let addr = target.addr();
    let user = target.user.clone();
    let rejected = |tried: String| SshError::AuthRejected {
        addr: addr.clone(),
        user: user.clone(),
        tried,
    };
    let auth_err = |source: russh::Error| SshError::Handshake {
        addr: addr.clone(),
        source: Box::new(source),
    };
    let key = match &target.auth {
        Auth::KeyFile { path, passphrase } => {
            let label = path.display().to_string();
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| SshError::Key {
                    key: label.clone(),
                    reason: e.to_string(),
                })?;
            Some((decode_key(&text, passphrase.as_ref(), &label)?, label))
        }
        Auth::KeyData { pem, passphrase } => {
            let label = "from the SSH Secret (ssh-privatekey)".to_owned();
            Some((
                decode_key(pem.expose(), passphrase.as_ref(), &label)?,
                label,
            ))
        }
        Auth::Agent | Auth::AgentSocket(_) => None,
    };
    if let Some((key, label)) = key {
        let hash = rsa_hash(handle, key.algorithm().is_rsa(), &addr).await?;
        let ok = handle
            .authenticate_publickey(
                user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(auth_err)?;
        return if ok.success() {
            Ok(())
        } else {
            Err(rejected(format!("public key {label}")))
        };
    }

    // Both give an AgentClient over a Unix socket.
    let mut agent = match &target.auth {
        Auth::AgentSocket(path) => {
            AgentClient::connect_uds(path)
                .await
                .map_err(|e| SshError::Agent {
                    reason: format!("cannot reach the agent at {}: {e}", path.display()),
                })?
        }
        _ => AgentClient::connect_env()
            .await
            .map_err(|e| SshError::Agent {
                reason: format!("cannot reach the agent at SSH_AUTH_SOCK: {e}"),
            })?,
    };
    let identities = agent
        .request_identities()
        .await
        .map_err(|e| SshError::Agent {
            reason: format!("cannot list identities: {e}"),
        })?;
    let mut tried = vec![];
    for identity in identities {
        let AgentIdentity::PublicKey { key, .. } = identity else {
            continue;
        };
        let hash = rsa_hash(handle, key.algorithm().is_rsa(), &addr).await?;
        tried.push(fingerprint(&key));
        match handle
            .authenticate_publickey_with(user.clone(), key, hash, &mut agent)
            .await
        {
            Ok(r) if r.success() => return Ok(()),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(host = %target.label(), error = %e, "agent could not sign; trying next identity")
            }
        }
    }
    Err(rejected(if tried.is_empty() {
        "the ssh-agent holds no keys".into()
    } else {
        format!("agent keys {}", tried.join(", "))
    }))
}

/// rsa-sha2-512/256 as the server supports (never SHA-1 `ssh-rsa` when the
/// server announces better).
async fn rsa_hash(
    handle: &client::Handle<Client>,
    is_rsa: bool,
    addr: &str,
) -> Result<Option<HashAlg>> {
    if !is_rsa {
        return Ok(None);
    }
    Ok(handle
        .best_supported_rsa_hash()
        .await
        .map_err(|source| SshError::Handshake {
            addr: addr.to_owned(),
            source: Box::new(source),
        })?
        // No server-sig-algs at all: every OpenSSH since 7.2 still takes
        // rsa-sha2-256. Some(None): the server only does SHA-1 ssh-rsa.
        .unwrap_or(Some(HashAlg::Sha256)))
}
