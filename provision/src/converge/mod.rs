//! Bringing a host to its plan over SSH: the steps `kubeup up` and the
//! operator share. Each step first looks (read-only), then acts only where
//! the host differs, so a converged host sees no write and no restart; with
//! `dry_run` it only looks and reports what it would do.

mod bundle;
mod certs;
mod files;
mod preflight;
mod reset;
pub mod reset_phases;
mod stamp;
mod units;

pub use bundle::{Part, bundle_in_place, import_images, push_bundle, push_bundle_part};
pub use certs::{CaSet, ensure_certs, remote_certs};
pub use files::{record_installed, remote_sha256, write_batch, write_files};
pub use preflight::{Check, PreflightReport, Role, preflight};
pub use reset::reset_host;
pub use stamp::load_verified_cached;
pub use units::{ensure_units, start_if_idle, unit_status};

use std::collections::BTreeSet;

use crate::hostplan::Unit;
use crate::ssh::SshError;

/// What a converge step changed (or, in a dry run, would change).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Changes {
    pub uploaded: Vec<String>,
    pub written: Vec<String>,
    pub issued: Vec<String>,
    pub restarted: Vec<String>,
    pub started: Vec<String>,
    /// Units whose inputs changed and that must restart.
    #[serde(skip)]
    pub restart: BTreeSet<Unit>,
    #[serde(skip)]
    pub units_changed: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.uploaded.is_empty()
            && self.written.is_empty()
            && self.issued.is_empty()
            && self.restarted.is_empty()
            && self.started.is_empty()
    }

    /// What happened to the units, for progress: "started a, b; restarted
    /// c", or "all running".
    pub fn units_summary(&self) -> String {
        let mut parts = vec![];
        if !self.started.is_empty() {
            parts.push(format!("started {}", self.started.join(", ")));
        }
        if !self.restarted.is_empty() {
            parts.push(format!("restarted {}", self.restarted.join(", ")));
        }
        if parts.is_empty() {
            "all running".into()
        } else {
            parts.join("; ")
        }
    }

    /// Name `host` in front of every line (a run over several hosts).
    pub fn prefix_items(&mut self, host: &str) {
        for list in [
            &mut self.uploaded,
            &mut self.written,
            &mut self.issued,
            &mut self.started,
            &mut self.restarted,
        ] {
            for item in list.iter_mut() {
                *item = format!("{host}: {item}");
            }
        }
    }

    pub fn merge(&mut self, other: Changes) {
        self.uploaded.extend(other.uploaded);
        self.written.extend(other.written);
        self.issued.extend(other.issued);
        self.restarted.extend(other.restarted);
        self.started.extend(other.started);
        self.restart.extend(other.restart);
        self.units_changed |= other.units_changed;
    }
}

/// A converge step failed on a host.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error("{host}: {step}: {source}")]
    Ssh {
        host: String,
        step: &'static str,
        // Boxed: SshError is large and this error travels through every step.
        #[source]
        source: Box<SshError>,
    },
    #[error("{host}: {step}: {message}")]
    Host {
        host: String,
        step: &'static str,
        message: String,
    },
    #[error("{host}: {step}: {source}")]
    Pki {
        host: String,
        step: &'static str,
        #[source]
        source: crate::pki::PkiError,
    },
    #[error("{step}: failed to read {path}: {source}")]
    Local {
        step: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ConvergeError {
    /// Stable reason for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Ssh { source, .. } => source.reason(),
            Self::Host { .. } => "HostError",
            Self::Pki { .. } => "CertificateError",
            Self::Local { .. } => "LocalError",
        }
    }

    /// A retry cannot help (host key mismatch, sudo needs a password, …).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Ssh { source, .. } => source.is_permanent(),
            Self::Host { .. } | Self::Pki { .. } | Self::Local { .. } => false,
        }
    }
}

pub(crate) fn ssh_err<'a>(
    host: &'a str,
    step: &'static str,
) -> impl FnOnce(SshError) -> ConvergeError + 'a {
    move |source| ConvergeError::Ssh {
        host: host.to_string(),
        step,
        source: Box::new(source),
    }
}
