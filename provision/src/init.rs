//! `kubeup init`: a new cluster directory — a commented `cluster.yaml` and
//! the PKI. Running it again keeps everything that exists.

use std::path::{Path, PathBuf};

use kubeup_crds::Cluster;

use crate::config::{self, ConfigError};
use crate::pki::{self, InitReport, PkiError};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("failed to create {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// What `init` did.
#[derive(Debug)]
pub struct InitSummary {
    pub cluster_yaml: PathBuf,
    /// False when an existing cluster.yaml was kept.
    pub cluster_yaml_created: bool,
    pub pki: InitReport,
}

/// Create (or complete) the cluster directory `dir`. `cluster` is written as
/// `cluster.yaml` only if there is none; an existing one is validated and
/// its certificate lifetimes are used.
pub fn init_cluster_dir(dir: &Path, cluster: &Cluster) -> Result<InitSummary, InitError> {
    std::fs::create_dir_all(dir).map_err(|source| InitError::Write {
        path: dir.into(),
        source,
    })?;
    let path = dir.join("cluster.yaml");
    let created = !path.exists();
    if created {
        let text = config::render_cluster_yaml(cluster);
        std::fs::write(&path, text).map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
    }
    let loaded = config::load(&path)?;
    let report = pki::init(dir, &loaded.cluster.spec.certificates)?;
    Ok(InitSummary {
        cluster_yaml: path,
        cluster_yaml_created: created,
        pki: report,
    })
}
