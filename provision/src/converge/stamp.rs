//! Verified-bundle stamps: hashing 350 MB on every run would make a
//! converged `up` slow, so after a full sha256 check we record each file's
//! size and modification time next to the manifest's digest. While none of
//! them changes, the check is not repeated; any change (a rebuilt or
//! touched file) brings the full check back. Local bundle and host copy
//! each keep their own stamp.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::artifacts::{self, BundleManifest, ManifestError};

/// File name of the stamp, inside the bundle directory (local and host).
pub const STAMP: &str = ".kubeup-verified";

/// The digest of a manifest: what the stamp is about.
// Serializing a manifest cannot fail: plain structs and string-keyed maps,
// no custom Serialize. A fallback digest could match a stale stamp and skip
// the full check, so there is none.
#[allow(clippy::expect_used)]
pub fn manifest_digest(manifest: &BundleManifest) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(manifest).expect("manifest serializes"),
    ))
}

/// `name size mtime` per file, as `stat -c '%n %s %Y'` prints it on a host.
fn local_stats(dir: &Path, manifest: &BundleManifest) -> Option<String> {
    let mut out = String::new();
    for name in manifest.files.keys() {
        let meta = std::fs::metadata(dir.join(name)).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        out.push_str(&format!("{name} {} {mtime}\n", meta.len()));
    }
    Some(out)
}

/// [`artifacts::load_verified`], skipping the hashing when the stamp says
/// nothing changed since the last full check.
pub fn load_verified_cached(dir: &Path) -> Result<BundleManifest, ManifestError> {
    let manifest = artifacts::load(dir)?;
    let expected =
        local_stats(dir, &manifest).map(|s| format!("{}\n{s}", manifest_digest(&manifest)));
    if let Some(expected) = &expected
        && std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| &s == expected)
    {
        return Ok(manifest);
    }
    let manifest = artifacts::load_verified(dir)?;
    if let Some(stamp) =
        local_stats(dir, &manifest).map(|s| format!("{}\n{s}", manifest_digest(&manifest)))
    {
        // Best effort: a read-only bundle just gets verified every time.
        let _ = std::fs::write(dir.join(STAMP), stamp);
    }
    Ok(manifest)
}

/// The shell snippet printing a host's stamp, a separator, then the
/// current stats of the bundle's files (run in the bundle directory).
pub fn remote_probe(manifest: &BundleManifest) -> String {
    let names: Vec<String> = manifest
        .files
        .keys()
        .map(|n| crate::ssh::quote(n).unwrap_or_default())
        .collect();
    format!(
        "cat {STAMP} 2>/dev/null; echo '#stats'; stat -c '%n %s %Y' -- {} 2>/dev/null; true",
        names.join(" ")
    )
}

/// Split the probe's output: (recorded stamp, current stamp).
pub fn parse_probe(manifest: &BundleManifest, output: &str) -> (String, String) {
    let (recorded, stats) = output.split_once("#stats\n").unwrap_or((output, ""));
    (
        recorded.to_string(),
        format!("{}\n{stats}", manifest_digest(manifest)),
    )
}
