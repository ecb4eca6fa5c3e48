//! The artifact bundle `kubeup up` put on the controller, seen by the
//! operator through a read-only hostPath (`/opt/kubeup/bundle/<version>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kubeup_provision::artifacts::{self, BundleFile, BundleManifest, CompressedCache};

use crate::error::{Error, Result};

/// Files a worker never needs: the control plane, tooling, and the images
/// of what runs only on the controller (the operator and the cluster
/// add-ons, which are pinned there: without a registry, an image must be
/// on every node a pod may land on, and these hundreds of MB would
/// otherwise be pushed and imported on every join).
const NOT_FOR_WORKERS: [&str; 7] = [
    "bin/etcd",
    "bin/etcdctl",
    "bin/helm",
    "bin/crictl",
    "images/kubeup-operator.tar",
    "images/coredns.tar",
    "images/metrics-server.tar",
];

/// The worker-only build of hyperkube (kubelet and kube-proxy, about half
/// its size), and the commands a worker runs from it.
const KUBENODE: &str = "kubenode";
const KUBENODE_COMMANDS: [&str; 2] = ["kubelet", "kube-proxy"];

/// The manifest restricted to what a worker runs. With `bin/kubenode` in
/// the bundle the worker's kubelet and kube-proxy are links to it and
/// hyperkube stays on the controller; a bundle without it (an older build,
/// a mirror) ships hyperkube as before.
pub fn worker_manifest(full: &BundleManifest) -> BundleManifest {
    let mut m = full.clone();
    m.files
        .retain(|name, _| !NOT_FOR_WORKERS.contains(&name.as_str()));
    if m.files.contains_key(&format!("bin/{KUBENODE}")) {
        m.files.remove("bin/hyperkube");
        m.symlinks = KUBENODE_COMMANDS
            .iter()
            .map(|cmd| (format!("bin/{cmd}"), KUBENODE.to_string()))
            .collect();
    }
    m
}

/// A bundle directory and its (worker) manifest.
pub type Bundle = Arc<(PathBuf, BundleManifest)>;

/// Loaded bundles, one per Kubernetes version; verified once per process.
#[derive(Clone, Default)]
pub struct Bundles {
    root: PathBuf,
    cache: Arc<Mutex<HashMap<String, Bundle>>>,
    compressed: Option<CompressedCache>,
}

impl Bundles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cache: Arc::default(),
            compressed: None,
        }
    }

    /// Send files compressed (to hosts with zstd), from copies kept here.
    pub fn with_compressed(mut self, cache: CompressedCache) -> Self {
        self.compressed = Some(cache);
        self
    }

    pub fn compressed(&self) -> Option<&CompressedCache> {
        self.compressed.as_ref()
    }

    /// Make the compressed copies of every worker file of every bundle
    /// under the root now, one file at a time (a single core), so the first
    /// join does not wait for them. Failures are left for the join to meet.
    pub async fn prewarm(&self) {
        let Some(compressed) = &self.compressed else {
            return;
        };
        let started = std::time::Instant::now();
        let versions: Vec<String> = std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut made = 0;
        let mut bundles = vec![];
        for version in versions {
            let Ok(bundle) = self.get(&version).await else {
                continue;
            };
            let (dir, manifest) = (&bundle.0, &bundle.1);
            for (name, file) in &manifest.files {
                if CompressedCache::worth_it(file)
                    && compressed.get(&dir.join(name), file).await.is_ok()
                {
                    made += 1;
                }
            }
            bundles.push(bundle);
        }
        // Copies of bundles no longer on this host (an upgrade) go; none
        // while no bundle could be read (a mount not there yet).
        let pruned = if bundles.is_empty() {
            0
        } else {
            compressed
                .prune_unlisted(bundles.iter().map(|b| &b.1))
                .unwrap_or_default()
        };
        tracing::info!(files = made, pruned, elapsed = ?started.elapsed(), "compressed copies for transfer ready");
    }

    /// The worker's view of the bundle for `version`.
    pub async fn get(&self, version: &str) -> Result<Bundle> {
        if let Some(b) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(version)
        {
            return Ok(b.clone());
        }
        let dir = self.root.join(version);
        let loaded = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || load(&dir)
        })
        .await
        .map_err(|e| Error::Bundle {
            dir: dir.display().to_string(),
            source: BundleError::Task(e),
        })??;
        let entry = Arc::new((dir, worker_manifest(&loaded)));
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(version.to_string(), entry.clone());
        Ok(entry)
    }
}

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Manifest(#[from] kubeup_provision::artifacts::ManifestError),
    #[error("reading the directory: {0}")]
    Scan(#[source] std::io::Error),
    #[error("{0}")]
    Missing(&'static str),
    #[error("the loading task ended: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// `bundle.json` when the directory has one (verified), else a manifest
/// made by hashing the directory (the host copy `kubeup up` pushes may lack
/// the manifest file).
pub fn load(dir: &Path) -> Result<BundleManifest> {
    let err = |source: BundleError| Error::Bundle {
        dir: dir.display().to_string(),
        source,
    };
    if dir.join(artifacts::MANIFEST_FILE).exists() {
        return artifacts::load_verified(dir).map_err(|e| err(BundleError::Manifest(e)));
    }
    if !dir.is_dir() {
        return Err(err(BundleError::Missing("the directory does not exist")));
    }
    let version = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut m = BundleManifest::new(version);
    scan(dir, dir, &mut m).map_err(|e| err(BundleError::Scan(e)))?;
    if !m
        .files
        .keys()
        .any(|k| k.ends_with("kubelet") || k.ends_with("hyperkube"))
    {
        return Err(err(BundleError::Missing("it holds no kubelet")));
    }
    Ok(m)
}

fn scan(root: &Path, dir: &Path, m: &mut BundleManifest) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // read_dir of a directory under root yields paths under root.
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let rel = rel.to_string_lossy().into_owned();
        if rel.starts_with('.') {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            m.symlinks
                .insert(rel, target.to_string_lossy().into_owned());
        } else if meta.is_dir() {
            scan(root, &path, m)?;
        } else if meta.is_file() {
            let (_, sha256) = artifacts::sha256_file(&path)?;
            let image = rel
                .strip_prefix("images/")
                .and_then(|n| n.strip_suffix(".tar"))
                .map(str::to_string);
            m.files.insert(
                rel,
                BundleFile {
                    version: String::new(),
                    sha256,
                    size: meta.len(),
                    source: "scanned".into(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                    image,
                    recipe: None,
                },
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_manifest_is_scanned() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::fs::create_dir_all(d.path().join("images")).unwrap();
        std::fs::write(d.path().join("bin/hyperkube"), b"elf").unwrap();
        std::fs::write(d.path().join("bin/etcd"), b"elf").unwrap();
        std::fs::write(d.path().join("images/pause.tar"), b"tar").unwrap();
        std::os::unix::fs::symlink("hyperkube", d.path().join("bin/kubelet")).unwrap();
        let m = load(d.path()).unwrap();
        assert_eq!(m.symlinks["bin/kubelet"], "hyperkube");
        assert_eq!(m.files["images/pause.tar"].image.as_deref(), Some("pause"));
        let w = worker_manifest(&m);
        assert!(!w.files.contains_key("bin/etcd"));
        assert!(w.files.contains_key("bin/hyperkube"));
        assert_eq!(
            kubeup_provision::hostplan::node::pause_image(&w),
            "registry.k8s.io/pause:3.10.1"
        );
    }

    #[test]
    fn a_worker_gets_kubenode_instead_of_hyperkube_when_the_bundle_has_it() {
        let mut full = BundleManifest::new("v1.34.10");
        let file = |size| BundleFile {
            version: "v1.34.10".into(),
            sha256: "0".repeat(64),
            size,
            source: "test".into(),
            executable: true,
            image: None,
            recipe: None,
        };
        for (name, size) in [
            ("bin/hyperkube", 135),
            ("bin/kubenode", 70),
            ("bin/crictl", 28),
            ("bin/containerd", 48),
        ] {
            full.files.insert(name.into(), file(size));
        }
        for cmd in ["kube-apiserver", "kubelet", "kube-proxy", "kubectl"] {
            full.symlinks
                .insert(format!("bin/{cmd}"), "hyperkube".into());
        }
        let w = worker_manifest(&full);
        let files: Vec<&str> = w.files.keys().map(String::as_str).collect();
        assert_eq!(files, ["bin/containerd", "bin/kubenode"]);
        assert_eq!(w.resolve("bin/kubelet").unwrap().0, "bin/kubenode");
        assert_eq!(w.resolve("bin/kube-proxy").unwrap().0, "bin/kubenode");
        assert!(w.resolve("bin/kube-apiserver").is_none());

        // An older bundle without kubenode: hyperkube and its links stay.
        full.files.remove("bin/kubenode");
        let w = worker_manifest(&full);
        assert_eq!(w.resolve("bin/kubelet").unwrap().0, "bin/hyperkube");
    }

    #[test]
    fn a_missing_bundle_says_where() {
        let e = load(Path::new("/nonexistent/v1.34.10"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/v1.34.10"), "{e}");
    }
}
