//! The SSH transport: everything kubeup does to a machine goes through here,
//! for the CLI and the operator alike.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubeup_provision::ssh::SshError> {
//! use std::sync::Arc;
//! use kubeup_provision::ssh::*;
//!
//! let target = SshTarget::new("10.0.0.5", 22, "admin", Auth::KeyFile {
//!     path: "id_ed25519".into(),
//!     passphrase: None,
//! });
//! let store = Arc::new(KnownHostsFile::new("cluster/known_hosts"));
//! let session = Session::connect(&target, store, &SshOptions::default()).await?;
//! let out = session.run(&Command::new("uname").arg("-r")).await?;
//! session.run_privileged(&Command::new("systemctl").args(["restart", "kubelet"])).await?;
//! session.upload("bundle/kubelet".as_ref(), "/usr/local/bin/kubelet", 0o755, Some("root:root")).await?;
//! session.write_file(b"config", "/etc/kubernetes/kubelet.yaml", 0o600, None).await?;
//! let fp = session.host_key_fingerprint().await;
//! # Ok(()) }
//! ```
//!
//! API:
//! - [`SshTarget`] `{ address, port, user, auth: Auth, host_key: HostKeyTrust,
//!   sudo_password: Option<Secret>, bastion: Option<Box<SshTarget>> }`;
//!   [`Auth`] = `KeyFile { path, passphrase }` | `KeyData { pem, passphrase }`
//!   (a Secret's `ssh-privatekey`) | `Agent` (`SSH_AUTH_SOCK`). ed25519,
//!   ECDSA and RSA keys (RSA signs with rsa-sha2-512/256).
//! - [`Session::connect`]`(&SshTarget, Arc<dyn HostKeyStore>, &SshOptions)
//!   -> Result<Session>`: connect (through the bastion's `direct-tcpip`
//!   channel if any, both host keys verified), authenticate. One connection,
//!   one channel per command, keepalives, re-established with backoff when
//!   it drops (commands are never re-sent).
//! - [`Session::run`] (non-zero exit → [`SshError::CommandFailed`]),
//!   [`Session::output`] (any exit status), [`Session::run_privileged`];
//!   [`Command`] quotes every argument.
//! - [`Session::upload`] / [`Session::write_file`]`(…, remote, mode, owner)
//!   -> Result<UploadOutcome>`: streamed, atomic, skipped on equal sha256.
//! - [`Session::host_key_fingerprint`], [`Session::host_key_openssh`], and
//!   [`Session::bastion_host_key_fingerprint`] /
//!   [`Session::bastion_host_key_openssh`] for the bastion's key. The
//!   bastion's key goes through the same [`HostKeyTrust`] engine as the
//!   target's (its own `host_key`), recorded in the same store under its
//!   own `host:port`, so a caller seeds and reads back each separately.
//!
//! Host keys ([`HostKeyTrust`]): `Pin` accepts exactly the pinned key
//! (OpenSSH public key line or `SHA256:` fingerprint); `AcceptNew` accepts a
//! key recorded in the [`HostKeyStore`] — or, when none is recorded yet,
//! records the presented one. Any change is refused with
//! [`SshError::HostKeyMismatch`] naming both fingerprints and how to
//! re-trust; it is [`SshError::is_permanent`], so callers stop retrying.
//! Stores: [`KnownHostsFile`] (OpenSSH format, `[host]:port` for ports other
//! than 22) and [`MemoryHostKeyStore`] (the operator's status).
//!
//! Privilege: root runs commands as is; other users through `sudo -n`, or,
//! when a sudo password is given, `sudo -S -k -p ''` with the password as
//! the first stdin line. A sudo that wants a password we do not have is
//! [`SshError::SudoNeedsPassword`]. Secrets are [`Secret`]s (`***` when
//! printed) and never part of a command line, a log line or an error.
//!
//! Logs: every line carries `host` (`user@host:port`); command output is
//! logged line by line at debug level.

mod archive;
mod command;
mod error;
mod hostkey;
mod secret;
mod session;
mod upload;

pub use archive::ArchiveFile;
pub use command::{Command, Output, quote};
pub use error::{Result, SshError};
pub use hostkey::{
    HostKeyStore, KnownHostsFile, MemoryHostKeyStore, Pin, fingerprint, known_hosts_name,
};
pub use kubeup_crds::host::{HostKeyPolicy, HostKeyTrust};
pub use secret::Secret;
pub use session::{Auth, Session, SshOptions, SshTarget};
pub use upload::{CompressedSource, Segment, UploadOutcome, check_remote_path};
