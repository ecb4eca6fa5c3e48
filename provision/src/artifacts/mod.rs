//! Kubernetes artifacts: the binaries and images kubeup ships to hosts.
//!
//! Two sources, one shape. A local *bundle* directory (built by `cargo xtask
//! bundle`) carries a [`BundleManifest`] (`bundle.json`) naming every file
//! with its version, size and sha256; a remote *base URL* serves the same
//! layout and the cluster pins each file's sha256 ([`RemoteArtifacts`]).
//! Either way a file is trusted only after its checksum matched, so a host
//! never gets a byte kubeup did not verify.

mod compressed;
mod digest;
mod fetch;
mod manifest;

use std::path::PathBuf;

pub use compressed::{CompressedCache, frame_of, zstd_frame};
pub(crate) use digest::filled;
pub use digest::{Sha256Hex, sha256_file};
pub use fetch::{FetchError, RemoteArtifacts};
pub use manifest::{
    BundleFile, BundleManifest, MANIFEST_FILE, ManifestError, Problem, load, load_verified, verify,
};

/// The root of kubeup's local caches: `$KUBEUP_CACHE`, else
/// `$HOME/.cache/kubeup`, else a relative `.cache/kubeup` (no home at all is
/// rare enough that a relative path beats failing).
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBEUP_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache").join("kubeup")
}

/// hack/bundle/parts: the parts the bundle is made of, one a line.
pub const BUNDLE_PARTS: &str = include_str!("../../../hack/bundle/parts");

/// The part names of [`BUNDLE_PARTS`] (comments and blank lines left out).
pub fn bundle_parts() -> Vec<&'static str> {
    BUNDLE_PARTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Where `cargo xtask bundle` puts the bundle for a Kubernetes version, and
/// where kubeup looks when `Cluster.spec.artifacts` names neither a bundle
/// directory nor a base URL: `bundle/<version>-<first 8 hex of the sha256
/// of hack/bundle/parts>` (hack/env.sh computes the same as
/// `$KUBEUP_BUNDLE`), so checkouts with different parts keep apart.
pub fn default_bundle_dir(kubernetes_version: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = hex::encode(Sha256::digest(BUNDLE_PARTS.as_bytes()));
    let short = key.get(..8).unwrap_or(&key);
    cache_root()
        .join("bundle")
        .join(format!("{kubernetes_version}-{short}"))
}
