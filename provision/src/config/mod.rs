//! `cluster.yaml`: a `Cluster` document (apiVersion, kind, metadata, spec).
//!
//! [`load`] parses and validates it before any SSH connection is made and
//! returns every problem at once, each with its field path and what to do.

mod render;
mod validate;

pub use render::render_cluster_yaml;
pub use validate::{MAX_CA_DAYS, MAX_LEAF_DAYS, is_node_name, validate};

use std::fmt;
use std::path::{Path, PathBuf};

use kubeup_crds::Cluster;

/// One thing wrong with a cluster.yaml.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Field path, e.g. `spec.networking.podCidr`.
    pub path: String,
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl Problem {
    pub fn new(
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

/// Why a cluster.yaml could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid cluster definition:\n{}", list(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A validated cluster.yaml and the directory it lives in (the cluster
/// directory: `pki/`, `known_hosts`, `admin.kubeconfig` sit beside it).
#[derive(Clone, Debug)]
pub struct LoadedCluster {
    pub cluster: Cluster,
    pub path: PathBuf,
    pub dir: PathBuf,
}

impl LoadedCluster {
    /// Resolve a path from the spec relative to the cluster directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        resolve(&self.dir, p)
    }

    pub fn name(&self) -> &str {
        self.cluster.metadata.name.as_deref().unwrap_or("kubeup")
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The everyday admin credential (`kubeup:cluster-admins`, bound to
    /// `cluster-admin` by RBAC).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The break-glass credential (`system:masters`, bypasses RBAC).
    pub fn super_admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("super-admin.kubeconfig")
    }
}

pub(crate) fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Read, parse and validate a cluster.yaml.
pub fn load(path: &Path) -> Result<LoadedCluster, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let dir = dir.canonicalize().unwrap_or(dir);
    let cluster = parse(&text, &dir).map_err(|problems| ConfigError::Invalid {
        path: path.into(),
        problems,
    })?;
    Ok(LoadedCluster {
        cluster,
        path: path.into(),
        dir,
    })
}

/// Parse and validate cluster.yaml text; relative paths resolve against `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<Cluster, Vec<Problem>> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        vec![Problem::new(
            "(file)",
            format!("not valid YAML: {e}"),
            "fix the YAML syntax at the position shown",
        )]
    })?;
    let mut problems = validate::document_shape(&value);
    if !problems.is_empty() {
        return Err(problems);
    }
    let cluster: Cluster = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let hint = if inner.contains("unknown field") {
            "remove the field or fix its spelling; `kubectl explain clusters.spec` lists the fields"
        } else {
            "see the commented cluster.yaml written by `kubeup init`"
        };
        vec![Problem::new(path, inner, hint)]
    })?;
    problems.extend(validate(&cluster, dir));
    if problems.is_empty() {
        Ok(cluster)
    } else {
        Err(problems)
    }
}
