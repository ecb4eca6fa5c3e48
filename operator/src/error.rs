//! The operator's error: what a reconcile reports, wrapping the errors of
//! the modules that have their own ([`crate::workerjoin::access::AccessError`],
//! [`crate::workerjoin::csr::CsrError`],
//! [`crate::workerjoin::knownhosts::KnownHostsError`],
//! [`crate::workerjoin::nodetoken::TokenError`], the SSH and converge
//! errors) with their sources kept. Every variant names the WorkerJoin or
//! the host it concerns; none ever carries key material (Secret contents
//! are never formatted, SSH errors are secret-free by construction).

use std::time::Duration;

use kubeup_provision::converge::ConvergeError;
use kubeup_provision::ssh::SshError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{host}: {source}")]
    Ssh {
        /// Boxed: keeps `Error` under clippy's `result_large_err` threshold.
        host: Box<str>,
        #[source]
        source: SshError,
    },
    #[error(transparent)]
    Converge(#[from] ConvergeError),
    #[error("preflight failed on {host}; nothing was changed:\n{failures}")]
    Preflight { host: String, failures: String },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// Found only on the host, so only a walk finds it: blocks like any
    /// permanent error until the WorkerJoin (spec.nodeName) changes.
    #[error("{0}")]
    InvalidHostName(String),
    /// Boxed: keeps `Error` under clippy's `result_large_err` threshold.
    #[error(transparent)]
    Access(Box<crate::workerjoin::access::AccessError>),
    #[error(
        "no Cluster object found: `kubeup up` creates it; the operator reads the cluster's version and networking from it"
    )]
    NoCluster,
    #[error(
        "failed to load the artifact bundle from {dir}: {source} (is /opt/kubeup/bundle mounted from the controller?)"
    )]
    Bundle {
        dir: String,
        #[source]
        source: crate::runtime::bundle::BundleError,
    },
    #[error("certificate {name}: {reason}")]
    Certificate { name: String, reason: String },
    #[error(transparent)]
    Csr(#[from] crate::workerjoin::csr::CsrError),
    #[error(transparent)]
    Token(#[from] crate::workerjoin::nodetoken::TokenError),
    #[error("{0}")]
    NodeNameTaken(String),
    #[error(transparent)]
    KnownHosts(#[from] crate::workerjoin::knownhosts::KnownHostsError),
    /// A phase (of a join or a removal) that ran past the phase timeout (a
    /// host or connection that stopped answering): transient, the session
    /// is closed and the flow resumes from its last finished phase.
    #[error(
        "{phase} did not finish within {secs}s (the host or the connection stopped answering); the SSH session was closed and it is tried again from the last finished phase"
    )]
    PhaseTimeout { phase: &'static str, secs: u64 },
    #[error("drain of node {node}: {reason}")]
    Drain { node: String, reason: String },
    #[error("failed to finalize: {0}")]
    Finalizer(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::workerjoin::access::AccessError> for Error {
    fn from(e: crate::workerjoin::access::AccessError) -> Self {
        Error::Access(Box::new(e))
    }
}

impl Error {
    /// Stable PascalCase reason for Events, conditions and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubeApiError",
            Error::Ssh { source, .. } => source.reason(),
            Error::Converge(e) => e.category(),
            Error::Preflight { .. } => "PreflightFailed",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::InvalidHostName(_) => "InvalidHostName",
            Error::Access(e) => e.category(),
            Error::NoCluster => "ClusterNotFound",
            Error::Bundle { .. } => "BundleUnavailable",
            Error::Certificate { .. } => "CertificateFailed",
            Error::Csr(e) => e.category(),
            Error::Token(e) => e.category(),
            Error::NodeNameTaken(_) => "NodeNameTaken",
            Error::KnownHosts(e) => e.category(),
            Error::PhaseTimeout { .. } => "PhaseTimedOut",
            Error::Drain { .. } => "DrainFailed",
            Error::Finalizer(_) => "FinalizerFailed",
            Error::Internal(_) => "InternalError",
        }
    }

    /// The SSH error category (snake_case) when this is an SSH failure: the
    /// `kubeup_operator_ssh_errors_total{category}` label.
    pub fn ssh_category(&self) -> Option<&'static str> {
        match self {
            Error::Ssh { source, .. } => Some(source.category()),
            Error::Access(e) => e.ssh_error().map(SshError::category),
            Error::Converge(ConvergeError::Ssh { source, .. }) => Some(source.category()),
            _ => None,
        }
    }

    /// Retrying cannot help until someone changes the WorkerJoin (or its
    /// Secret): host key mismatch, bad spec, sudo that wants a password…
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Ssh { source, .. } => source.is_permanent(),
            Error::Converge(e) => e.is_permanent(),
            Error::KnownHosts(e) => e.is_permanent(),
            Error::Access(e) => e.is_permanent(),
            Error::InvalidSpec(_) | Error::InvalidHostName(_) | Error::NodeNameTaken(_) => true,
            _ => false,
        }
    }

    /// A host key problem (names both fingerprints on a mismatch).
    pub fn is_host_key(&self) -> bool {
        match self {
            Error::Ssh { source, .. } => source.is_host_key_error(),
            Error::Access(e) => e.ssh_error().is_some_and(SshError::is_host_key_error),
            Error::Converge(ConvergeError::Ssh { source, .. }) => source.is_host_key_error(),
            _ => false,
        }
    }

    /// Wrap an SSH error with the host it happened on.
    pub fn ssh(host: impl Into<Box<str>>) -> impl FnOnce(SshError) -> Error {
        let host = host.into();
        move |source| Error::Ssh { host, source }
    }

    /// `phase` ran past the phase deadline ([`Procedure::with_deadline`](kubeup_provision::phase::Procedure::with_deadline)).
    pub fn phase_timeout<K: kubeup_provision::phase::PhaseKey>(phase: K, after: Duration) -> Error {
        Error::PhaseTimeout {
            phase: phase.name(),
            secs: after.as_secs(),
        }
    }

    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_pascal_case() {
        let e = Error::Ssh {
            host: "root@h:22".into(),
            source: SshError::SudoNeedsPassword {
                user: "u".into(),
                host: "h".into(),
            },
        };
        assert_eq!(e.category(), "SudoNeedsPassword");
        assert!(e.is_permanent());
        assert_eq!(e.ssh_category(), Some("sudo_needs_password"));
        assert!(!Error::NoCluster.is_permanent());
        assert!(Error::InvalidSpec("x".into()).is_permanent());
    }

    /// A module's own error keeps its category, its permanence and its
    /// message through `?`.
    #[test]
    fn module_errors_keep_their_category_and_message() {
        use crate::workerjoin::access::AccessError;
        use crate::workerjoin::csr::CsrError;
        use crate::workerjoin::knownhosts::KnownHostsError;
        use crate::workerjoin::nodetoken::TokenError;
        let refused = Error::from(CsrError::Refused {
            name: "c".into(),
            reason: "public key".into(),
        });
        assert_eq!(refused.category(), "CsrRefused");
        assert!(!refused.is_permanent());
        assert_eq!(
            refused.to_string(),
            "CertificateSigningRequest c is not approved: public key"
        );
        let bad_json = serde_json::from_str::<u8>("x").unwrap_err();
        let unreadable = Error::from(KnownHostsError::Unreadable {
            uid: "u".into(),
            namespace: "ns".into(),
            source: bad_json,
        });
        assert_eq!(unreadable.category(), "KnownHostsUnreadable");
        assert!(unreadable.is_permanent());
        assert!(std::error::Error::source(&unreadable).is_some());
        let unbound = Error::from(TokenError::Unbound { node: "n".into() });
        assert_eq!(unbound.category(), "CertificateFailed");
        let no_sudo = Error::from(AccessError::Ssh {
            host: "root@h:22".into(),
            source: SshError::SudoNeedsPassword {
                user: "u".into(),
                host: "h".into(),
            },
        });
        assert_eq!(no_sudo.category(), "SudoNeedsPassword");
        assert_eq!(no_sudo.ssh_category(), Some("sudo_needs_password"));
        assert!(no_sudo.is_permanent() && !no_sudo.is_host_key());
        let secret = Error::from(AccessError::Secret {
            namespace: "ns".into(),
            name: "s".into(),
            reason: "has no ssh-privatekey".into(),
        });
        assert_eq!(secret.category(), "SecretInvalid");
        assert!(!secret.is_permanent(), "a Secret may be fixed any time");
        assert_eq!(secret.to_string(), "Secret ns/s: has no ssh-privatekey");
    }
}

#[cfg(test)]
mod size {
    /// Returned from every reconcile step: keep it within clippy's
    /// `result_large_err` threshold (128 bytes).
    #[test]
    fn error_is_small_enough_to_return() {
        assert!(std::mem::size_of::<super::Error>() < 128);
    }
}
