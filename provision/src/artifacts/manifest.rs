//! `bundle.json`: what a bundle directory holds, with versions and checksums.
//!
//! Written by `cargo xtask bundle`, read by `kubeup up` and the operator to
//! decide what to push to a host (a file goes only where its sha256 differs).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::sha256_file;

/// The manifest's file name inside a bundle directory.
pub const MANIFEST_FILE: &str = "bundle.json";

/// The manifest layout version this code reads and writes.
const FORMAT: u32 = 1;

/// The content of `bundle.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleManifest {
    /// Layout version of this manifest; readers refuse one they don't know.
    pub format: u32,
    /// The Kubernetes version the bundle was built for, e.g. `v1.34.10`.
    pub kubernetes_version: String,
    /// Every regular file, keyed by its path relative to the bundle directory
    /// (`bin/etcd`, `cni/bridge`, `images/pause.tar`).
    pub files: BTreeMap<String, BundleFile>,
    /// Symbolic links, keyed by their relative path, valued by their target
    /// as written on disk (relative to the link's directory):
    /// `bin/kubelet` → `hyperkube`.
    #[serde(default)]
    pub symlinks: BTreeMap<String, String>,
}

/// One regular file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleFile {
    /// Version of the component the file belongs to (`v1.34.10`, `3.6.16`,
    /// `1.6.20~ds1-1+deb12u3`).
    pub version: String,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it came from: `go:<module>@<version>` or
    /// `debian:<package>=<version>`, or `kubeup:<recipe>` for files kubeup
    /// makes itself (the pause image).
    pub source: String,
    /// Whether hosts install it executable (0755) or not (0644).
    pub executable: bool,
    /// For an OCI image archive: the image name it carries once imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// sha256 over the recipe the file was built from (go.mod, go.sum,
    /// main.go…), so the builder can tell a file made from an older recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
}

/// Failure to read or write a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "failed to read bundle manifest {path}: {source} (build the bundle with `cargo xtask bundle`)"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error("failed to parse bundle manifest {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_path_to_error::Error<serde_json::Error>,
    },
    #[error("bundle manifest {path} has format {found}, this kubeup reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("bundle manifest {path} names {name:?}, which is not a plain relative path")]
    BadName { path: PathBuf, name: String },
    #[error(
        "bundle manifest {path} gives {name} the sha256 {sha256:?}, which is not 64 hex digits"
    )]
    BadSha256 {
        path: PathBuf,
        name: String,
        sha256: String,
    },
    #[error("failed to write bundle manifest {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "bundle {} does not match its manifest: {}; rebuild it with `cargo xtask bundle`",
        dir.display(),
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Damaged {
        dir: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ManifestError {
    /// A stable reason for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ManifestError::Read { .. } => "BundleMissing",
            ManifestError::Parse { .. }
            | ManifestError::Format { .. }
            | ManifestError::BadName { .. }
            | ManifestError::BadSha256 { .. } => "BundleManifestInvalid",
            ManifestError::Write { .. } => "BundleManifestWriteFailed",
            ManifestError::Damaged { .. } => "BundleDamaged",
        }
    }
}

/// Something wrong with one file of a bundle, as found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Missing {
        name: String,
    },
    Unreadable {
        name: String,
        error: String,
    },
    Size {
        name: String,
        expected: u64,
        actual: u64,
    },
    Checksum {
        name: String,
        expected: String,
        actual: String,
    },
    /// A symlink is absent, not a symlink, or points elsewhere.
    Symlink {
        name: String,
        expected: String,
        actual: Option<String>,
    },
}

impl Problem {
    /// The bundle-relative path the problem is about.
    pub fn name(&self) -> &str {
        match self {
            Problem::Missing { name }
            | Problem::Unreadable { name, .. }
            | Problem::Size { name, .. }
            | Problem::Checksum { name, .. }
            | Problem::Symlink { name, .. } => name,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { name } => write!(f, "{name}: missing"),
            Problem::Unreadable { name, error } => write!(f, "{name}: unreadable: {error}"),
            Problem::Size {
                name,
                expected,
                actual,
            } => write!(f, "{name}: size {actual}, manifest says {expected}"),
            Problem::Checksum {
                name,
                expected,
                actual,
            } => write!(f, "{name}: sha256 {actual}, manifest says {expected}"),
            Problem::Symlink {
                name,
                expected,
                actual: Some(actual),
            } => write!(f, "{name}: links to {actual}, manifest says {expected}"),
            Problem::Symlink { name, expected, .. } => {
                write!(f, "{name}: not a symlink to {expected}")
            }
        }
    }
}

impl BundleManifest {
    /// An empty manifest for a Kubernetes version.
    pub fn new(kubernetes_version: impl Into<String>) -> Self {
        Self {
            format: FORMAT,
            kubernetes_version: kubernetes_version.into(),
            files: BTreeMap::new(),
            symlinks: BTreeMap::new(),
        }
    }

    /// The regular file behind `name`, following one symlink:
    /// `bin/kubelet` gives (`bin/hyperkube`, its entry).
    pub fn resolve(&self, name: &str) -> Option<(String, &BundleFile)> {
        if let Some(file) = self.files.get(name) {
            return Some((name.to_owned(), file));
        }
        let target = self.symlinks.get(name)?;
        let real = match name.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{target}"),
            None => target.clone(),
        };
        self.files.get(&real).map(|file| (real, file))
    }

    /// Write `bundle.json` into `dir` atomically (temp file + rename), so a
    /// reader never sees half a manifest.
    pub fn save(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(format!(".{MANIFEST_FILE}.tmp"));
        serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::from)
            .and_then(|mut json| {
                json.push(b'\n');
                std::fs::write(&tmp, json)
            })
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| ManifestError::Write { path, source })
    }

    fn validate(&self, path: &Path) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format {
                path: path.to_owned(),
                found: self.format,
            });
        }
        // Names become paths on the workstation and on hosts: refuse any
        // that could escape the bundle directory.
        for name in self.files.keys().chain(self.symlinks.keys()) {
            if !is_plain_relative(name) {
                return Err(ManifestError::BadName {
                    path: path.to_owned(),
                    name: name.clone(),
                });
            }
        }
        for (name, target) in &self.symlinks {
            if target.contains('/') || !is_plain_relative(target) {
                return Err(ManifestError::BadName {
                    path: path.to_owned(),
                    name: format!("{name} -> {target}"),
                });
            }
        }
        for (name, file) in &self.files {
            if !is_sha256_hex(&file.sha256) {
                return Err(ManifestError::BadSha256 {
                    path: path.to_owned(),
                    name: name.clone(),
                    sha256: file.sha256.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Read and validate `dir/bundle.json`.
pub fn load(dir: &Path) -> Result<BundleManifest, ManifestError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|source| ManifestError::Read {
        path: path.clone(),
        source,
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let manifest: BundleManifest =
        serde_path_to_error::deserialize(de).map_err(|source| ManifestError::Parse {
            path: path.clone(),
            source,
        })?;
    manifest.validate(&path)?;
    Ok(manifest)
}

/// Check every file and symlink of the bundle in `dir` against its manifest.
/// An empty list means the bundle is complete and intact.
pub fn verify(dir: &Path) -> Result<Vec<Problem>, ManifestError> {
    let manifest = load(dir)?;
    let mut problems: Vec<Problem> = manifest
        .files
        .iter()
        .filter_map(|(name, file)| verify_file(dir, name, file))
        .collect();
    problems.extend(
        manifest
            .symlinks
            .iter()
            .filter_map(|(name, target)| verify_symlink(dir, name, target)),
    );
    Ok(problems)
}

/// Load the manifest of the bundle in `dir` and check every file against it:
/// what kubeup does before it ships anything from a bundle to a host.
pub fn load_verified(dir: &Path) -> Result<BundleManifest, ManifestError> {
    let problems = verify(dir)?;
    if !problems.is_empty() {
        return Err(ManifestError::Damaged {
            dir: dir.to_owned(),
            problems,
        });
    }
    load(dir)
}

impl BundleFile {
    /// Check the file `dir/name` against this entry; `None` when it matches.
    pub fn check(&self, dir: &Path, name: &str) -> Option<Problem> {
        verify_file(dir, name, self)
    }
}

fn verify_file(dir: &Path, name: &str, file: &BundleFile) -> Option<Problem> {
    let path = dir.join(name);
    let name = name.to_owned();
    // Size first: a truncated file is found without hashing 100 MiB.
    let size = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(Problem::Missing { name }),
        Err(e) => {
            return Some(Problem::Unreadable {
                name,
                error: e.to_string(),
            });
        }
        Ok(meta) if !meta.is_file() => {
            return Some(Problem::Unreadable {
                name,
                error: "not a regular file".into(),
            });
        }
        Ok(meta) => meta.len(),
    };
    if size != file.size {
        return Some(Problem::Size {
            name,
            expected: file.size,
            actual: size,
        });
    }
    match sha256_file(&path) {
        Err(e) => Some(Problem::Unreadable {
            name,
            error: e.to_string(),
        }),
        Ok((_, actual)) if actual != file.sha256 => Some(Problem::Checksum {
            name,
            expected: file.sha256.clone(),
            actual,
        }),
        Ok(_) => None,
    }
}

fn verify_symlink(dir: &Path, name: &str, target: &str) -> Option<Problem> {
    let actual = std::fs::read_link(dir.join(name))
        .ok()
        .map(|t| t.to_string_lossy().into_owned());
    (actual.as_deref() != Some(target)).then(|| Problem::Symlink {
        name: name.to_owned(),
        expected: target.to_owned(),
        actual,
    })
}

fn is_plain_relative(name: &str) -> bool {
    !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content: &[u8]) -> BundleFile {
        use sha2::Digest;
        BundleFile {
            version: "1".into(),
            sha256: hex::encode(sha2::Sha256::digest(content)),
            size: content.len() as u64,
            source: "test".into(),
            executable: true,
            image: None,
            recipe: None,
        }
    }

    fn bundle() -> (tempfile::TempDir, BundleManifest) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/hyperkube"), b"hyperkube").unwrap();
        std::os::unix::fs::symlink("hyperkube", dir.path().join("bin/kubelet")).unwrap();
        let mut m = BundleManifest::new("v1.34.10");
        m.files.insert("bin/hyperkube".into(), entry(b"hyperkube"));
        m.symlinks.insert("bin/kubelet".into(), "hyperkube".into());
        m.save(dir.path()).unwrap();
        (dir, m)
    }

    #[test]
    fn round_trips_and_verifies_clean() {
        let (dir, m) = bundle();
        assert_eq!(load(dir.path()).unwrap(), m);
        assert_eq!(verify(dir.path()).unwrap(), vec![]);
    }

    #[test]
    fn resolves_symlinks_to_their_file() {
        let (_dir, m) = bundle();
        let (real, file) = m.resolve("bin/kubelet").unwrap();
        assert_eq!(real, "bin/hyperkube");
        assert_eq!(file.size, 9);
        assert!(m.resolve("bin/nothing").is_none());
    }

    #[test]
    fn finds_corrupt_missing_and_relinked_files() {
        let (dir, _) = bundle();
        std::fs::write(dir.path().join("bin/hyperkube"), b"hyperkubE").unwrap();
        std::fs::remove_file(dir.path().join("bin/kubelet")).unwrap();
        let problems = verify(dir.path()).unwrap();
        assert!(matches!(&problems[0], Problem::Checksum { name, .. } if name == "bin/hyperkube"));
        assert!(matches!(
            &problems[1],
            Problem::Symlink { actual: None, .. }
        ));
        std::fs::remove_file(dir.path().join("bin/hyperkube")).unwrap();
        assert_eq!(
            verify(dir.path()).unwrap()[0],
            Problem::Missing {
                name: "bin/hyperkube".into()
            }
        );
        let err = load_verified(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bin/hyperkube: missing"), "{err}");
        assert!(err.contains("cargo xtask bundle"), "{err}");
    }

    #[test]
    fn refuses_names_that_escape_the_bundle() {
        let (dir, mut m) = bundle();
        m.files.insert("../etc/passwd".into(), entry(b""));
        m.save(dir.path()).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("../etc/passwd"), "{err}");
    }

    #[test]
    fn missing_manifest_says_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cargo xtask bundle"), "{err}");
    }
}
