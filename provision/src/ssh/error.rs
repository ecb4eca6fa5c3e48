//! The one error type of the SSH transport.

use std::time::Duration;

/// Everything that can go wrong talking to a host. Every variant names the
/// host (`host:port`, or `user@host:port` once a user is involved) and, for
/// commands, the command; none ever carries a secret (passwords are fed on
/// stdin and never part of a command line; key material never formatted).
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("failed to connect to {addr}: {source} (is sshd running there and the port right?)")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("timed out after {after:?} connecting to {addr} (TCP connect + SSH handshake)")]
    ConnectTimeout { addr: String, after: Duration },

    #[error("failed to open a tunnel to {target} through bastion {bastion}: {source}")]
    Tunnel {
        bastion: String,
        target: String,
        #[source]
        source: Box<russh::Error>,
    },

    #[error("SSH handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: Box<russh::Error>,
    },

    /// The host presented a key that is not the trusted one. Permanent: a
    /// retry will not fix it, a human has to decide.
    #[error(
        "host key mismatch for {addr}: expected {expected}, but the host presented {presented}. \
         Either the host was reinstalled or someone is intercepting the connection. If the new key \
         is legitimate (check it on the host: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), {retrust}"
    )]
    HostKeyMismatch {
        addr: String,
        /// Fingerprint(s) trusted so far (`SHA256:…`), comma separated.
        expected: String,
        /// Fingerprint of the key the host presented, with its algorithm.
        presented: String,
        /// How to re-trust (edit the pin / remove the known_hosts line).
        retrust: String,
    },

    #[error("invalid host key pin for {addr} ({pin:?}): {reason}")]
    InvalidPin {
        addr: String,
        pin: String,
        reason: String,
    },

    #[error("host {addr} presented a host certificate; kubeup trusts plain host keys only")]
    HostCertificate { addr: String },

    #[error("failed to use the host key store for {addr}: {source}")]
    HostKeyStore {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the private key {key} is encrypted and no passphrase was given: use an unencrypted key \
         (ssh-keygen -p -N '' -f KEY) or the ssh-agent"
    )]
    KeyEncrypted { key: String },

    #[error("failed to load the private key {key}: {reason}")]
    Key { key: String, reason: String },

    #[error("failed to use the ssh-agent: {reason}")]
    Agent { reason: String },

    #[error(
        "authentication as {user} on {addr} was refused ({tried}); check that the key is in ~{user}/.ssh/authorized_keys"
    )]
    AuthRejected {
        addr: String,
        user: String,
        tried: String,
    },

    #[error("timed out after {after:?} authenticating as {user} on {addr}")]
    AuthTimeout {
        addr: String,
        user: String,
        after: Duration,
    },

    #[error("the connection to {host} failed while {doing}: {source}")]
    Channel {
        host: String,
        doing: String,
        #[source]
        source: Box<russh::Error>,
    },

    #[error("the connection to {host} was lost while running `{command}`")]
    Disconnected { host: String, command: String },

    #[error(
        "`{command}` failed on {host} with {status}{}",
        stderr_suffix(stderr_tail)
    )]
    CommandFailed {
        host: String,
        command: String,
        /// `exit status N` or `signal NAME`.
        status: String,
        /// The last lines of stderr (at most a few KiB).
        stderr_tail: String,
    },

    #[error("`{command}` on {host} did not finish within {after:?}")]
    CommandTimeout {
        host: String,
        command: String,
        after: Duration,
    },

    #[error("{command} on {host} stalled: the host took no bytes for {after:?}")]
    UploadStalled {
        host: String,
        command: String,
        after: Duration,
    },

    #[error(
        "user {user} on host {host} needs a password for sudo: give one (CLI: KUBEUP_SUDO_PASSWORD \
         or --sudo-password-file; operator: sudoPasswordKey in the SSH Secret) or configure \
         NOPASSWD for {user} in /etc/sudoers.d"
    )]
    SudoNeedsPassword { user: String, host: String },

    #[error("sudo on host {host} rejected the password given for user {user}")]
    SudoPasswordRejected { user: String, host: String },

    #[error("user {user} on host {host} cannot use sudo: {stderr_tail}")]
    SudoFailed {
        user: String,
        host: String,
        stderr_tail: String,
    },

    #[error("failed to read {path}: {source}")]
    LocalIo {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("unexpected reply from {host} to `{command}`: {reason}")]
    Protocol {
        host: String,
        command: String,
        reason: String,
    },

    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
}

fn stderr_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", tail.trim_end())
    }
}

impl SshError {
    /// A stable, low-cardinality name for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            SshError::Connect { .. } => "connect",
            SshError::ConnectTimeout { .. } => "connect_timeout",
            SshError::Tunnel { .. } => "bastion_tunnel",
            SshError::Handshake { .. } => "handshake",
            SshError::HostKeyMismatch { .. } => "host_key_mismatch",
            SshError::InvalidPin { .. } => "host_key_invalid_pin",
            SshError::HostCertificate { .. } => "host_key_certificate",
            SshError::HostKeyStore { .. } => "host_key_store",
            SshError::KeyEncrypted { .. } => "key_encrypted",
            SshError::Key { .. } => "key",
            SshError::Agent { .. } => "agent",
            SshError::AuthRejected { .. } => "auth_rejected",
            SshError::AuthTimeout { .. } => "auth_timeout",
            SshError::Channel { .. } => "channel",
            SshError::Disconnected { .. } => "disconnected",
            SshError::CommandFailed { .. } => "command_failed",
            SshError::CommandTimeout { .. } => "command_timeout",
            SshError::UploadStalled { .. } => "upload_stalled",
            SshError::SudoNeedsPassword { .. } => "sudo_needs_password",
            SshError::SudoPasswordRejected { .. } => "sudo_password_rejected",
            SshError::SudoFailed { .. } => "sudo_failed",
            SshError::LocalIo { .. } => "local_io",
            SshError::Protocol { .. } => "protocol",
            SshError::InvalidArgument { .. } => "invalid_argument",
        }
    }

    /// [`SshError::category`] in PascalCase: the reason of a condition or
    /// Event (`host_key_mismatch` → `HostKeyMismatch`).
    pub fn reason(&self) -> &'static str {
        match self {
            SshError::Connect { .. } => "Connect",
            SshError::ConnectTimeout { .. } => "ConnectTimeout",
            SshError::Tunnel { .. } => "BastionTunnel",
            SshError::Handshake { .. } => "Handshake",
            SshError::HostKeyMismatch { .. } => "HostKeyMismatch",
            SshError::InvalidPin { .. } => "HostKeyInvalidPin",
            SshError::HostCertificate { .. } => "HostKeyCertificate",
            SshError::HostKeyStore { .. } => "HostKeyStore",
            SshError::KeyEncrypted { .. } => "KeyEncrypted",
            SshError::Key { .. } => "Key",
            SshError::Agent { .. } => "Agent",
            SshError::AuthRejected { .. } => "AuthRejected",
            SshError::AuthTimeout { .. } => "AuthTimeout",
            SshError::Channel { .. } => "Channel",
            SshError::Disconnected { .. } => "Disconnected",
            SshError::CommandFailed { .. } => "CommandFailed",
            SshError::CommandTimeout { .. } => "CommandTimeout",
            SshError::UploadStalled { .. } => "UploadStalled",
            SshError::SudoNeedsPassword { .. } => "SudoNeedsPassword",
            SshError::SudoPasswordRejected { .. } => "SudoPasswordRejected",
            SshError::SudoFailed { .. } => "SudoFailed",
            SshError::LocalIo { .. } => "LocalIo",
            SshError::Protocol { .. } => "Protocol",
            SshError::InvalidArgument { .. } => "InvalidArgument",
        }
    }

    /// True when retrying cannot help until someone changes the input (the
    /// pin, the key, the sudoers file…): callers stop retrying at once and
    /// wait for a change instead of backing off.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SshError::HostKeyMismatch { .. }
                | SshError::InvalidPin { .. }
                | SshError::HostCertificate { .. }
                | SshError::KeyEncrypted { .. }
                | SshError::Key { .. }
                | SshError::AuthRejected { .. }
                | SshError::SudoNeedsPassword { .. }
                | SshError::SudoPasswordRejected { .. }
                | SshError::SudoFailed { .. }
                | SshError::InvalidArgument { .. }
        ) || self.is_unreadable_store()
    }

    /// A host key store whose entry for the host cannot be read (a damaged
    /// known_hosts line): only an edit of that store helps.
    fn is_unreadable_store(&self) -> bool {
        matches!(self, SshError::HostKeyStore { source, .. }
            if source.kind() == std::io::ErrorKind::InvalidData)
    }

    /// True for a host-key problem (mismatch, bad pin, certificate).
    pub fn is_host_key_error(&self) -> bool {
        matches!(
            self,
            SshError::HostKeyMismatch { .. }
                | SshError::InvalidPin { .. }
                | SshError::HostCertificate { .. }
        )
    }
}

pub type Result<T, E = SshError> = std::result::Result<T, E>;
