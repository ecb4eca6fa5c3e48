//! The cluster's public-key infrastructure, generated with rcgen.
//!
//! Layout of `pki/` in a cluster directory (kubeadm's names where it has one):
//!
//! | file                         | what                                             |
//! |------------------------------|--------------------------------------------------|
//! | `ca.crt`, `ca.key`           | cluster CA: apiserver, kubelet clients, clients  |
//! | `etcd/ca.crt`, `etcd/ca.key` | etcd's own CA: etcd peers, servers, its clients   |
//! | `front-proxy-ca.crt`/`.key`  | front-proxy CA: aggregated API client auth        |
//! | `kubelet-serving-ca.crt`/`.key` | kubelet serving certificates only             |
//! | `sa.key`, `sa.pub`           | service-account token signing key pair           |
//! | `admin.crt`, `admin.key`     | everyday admin client (`kubeup:cluster-admins`)   |
//! | `super-admin.crt`/`.key`     | break-glass admin client (`system:masters`)       |
//! | `encryption-key`             | 32 random bytes (base64) for Secrets at rest      |
//!
//! Keys are written 0600 and directories 0700; nothing here prints a key.

mod authority;
mod files;
mod inspect;

pub use authority::{CaKind, CertificateAuthority, IssuedCert, LeafSpec, Usage};
pub use files::{
    ADMIN_CN, ADMIN_GROUP, InitItem, InitOutcome, InitReport, KubeletServingCa, SUPER_ADMIN_CN,
    SUPER_ADMIN_GROUP, ensure_admin_credentials, init, kubelet_serving_ca, write_private,
    write_public,
};
pub use inspect::{
    CertInfo, check_issued_by, inspect_dir, inspect_pem, is_current, not_after_unix, organizations,
};

use std::path::PathBuf;

/// Errors of the PKI module; each names the file or certificate concerned.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to generate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is damaged: {reason}; restore it from a backup, or remove the whole pki/ directory to start a new cluster"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "{path} is missing while {other} exists: the pki directory is incomplete; restore the file from a backup"
    )]
    Incomplete { path: PathBuf, other: PathBuf },
    #[error(
        "cannot issue {what} for {days} days: the date would be out of range; use spec.certificates within 1..=3650 (leaves) and 1..=36500 (CAs)"
    )]
    Lifetime { what: String, days: u32 },
    #[error("the OS random source failed: {0}")]
    Random(String),
}

impl PkiError {
    /// A stable reason string for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Generate { .. } => "Generate",
            Self::Read { .. } => "Read",
            Self::Write { .. } => "Write",
            Self::Damaged { .. } => "Damaged",
            Self::Incomplete { .. } => "Incomplete",
            Self::Lifetime { .. } => "Lifetime",
            Self::Random(_) => "Random",
        }
    }
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;
