//! zstd copies of bundle files, made once and reused for every host.
//!
//! Go binaries and image layers shrink 2.5–3.8× with zstd, and `zstd -d`
//! restores ~850 MB/s on one core here: sending the compressed copy moves a
//! third of the bytes for a tenth of a second of host CPU per 100 MB. What
//! compression costs is paid once per file (not per host): copies are
//! content-addressed (`<sha256>.zst`), written to a temp file and renamed
//! when complete, and made from a file whose sha256 is checked while it is
//! read, so a copy only exists for bytes the manifest vouches for. The
//! frame carries zstd's own content checksum, which `zstd -d` on the host
//! verifies: a damaged copy fails the upload instead of installing garbage.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::digest::copy_hashed;
use super::{BundleFile, BundleManifest};

/// zstd's default level: 10% smaller than level 1 for ~1.7× the (one-time)
/// compression CPU; decompression is as fast.
const LEVEL: i32 = 3;

/// Files smaller than this go as they are: a round trip costs more than
/// the bytes saved.
pub const MIN_SIZE: u64 = 1 << 20;

/// How long a copy of a file no bundle in use lists is kept: long enough
/// that a run on another bundle (another cluster, an older kubeup) is not
/// robbed of its copies mid-upload, short enough that rebuilt bundles do
/// not pile up (every operator image build leaves a ~9 MB copy).
pub const KEEP_UNLISTED: Duration = Duration::from_secs(24 * 60 * 60);

/// A directory of compressed copies, shared by every upload of a process.
#[derive(Clone, Debug)]
pub struct CompressedCache {
    dir: PathBuf,
    /// The decompressor a host must have (`command -v` is asked first;
    /// hosts without it get the plain file).
    decoder: String,
    /// One cell per sha256: concurrent joins wait for one compression.
    cells: Arc<Mutex<HashMap<String, Arc<OnceCell<PathBuf>>>>>,
}

impl CompressedCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            decoder: "zstd".into(),
            cells: Arc::default(),
        }
    }

    /// Use another decompressor command on hosts (it must accept
    /// `-d -c -q` like zstd); tests name one no host has.
    pub fn with_decoder(mut self, decoder: impl Into<String>) -> Self {
        self.decoder = decoder.into();
        self
    }

    pub fn decoder(&self) -> &str {
        &self.decoder
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `file` is worth sending compressed.
    pub fn worth_it(file: &BundleFile) -> bool {
        file.size >= MIN_SIZE
    }

    /// The compressed copy of `source` (which must be `file`), made now if
    /// this cache has none yet.
    pub async fn get(&self, source: &Path, file: &BundleFile) -> io::Result<PathBuf> {
        let cell = self
            .cells
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(file.sha256.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| {
            let (dir, source, file) = (self.dir.clone(), source.to_owned(), file.clone());
            async move {
                tokio::task::spawn_blocking(move || compress(&dir, &source, &file))
                    .await
                    .map_err(io::Error::other)?
            }
        })
        .await
        .cloned()
    }
}

impl CompressedCache {
    /// [`Self::prune`] keeping every file the `manifests` list (the bundles
    /// in use), after [`KEEP_UNLISTED`].
    pub fn prune_unlisted<'m>(
        &self,
        manifests: impl IntoIterator<Item = &'m BundleManifest>,
    ) -> io::Result<usize> {
        let listed = manifests
            .into_iter()
            .flat_map(|m| m.files.values().map(|f| f.sha256.as_str()))
            .collect();
        self.prune(&listed, KEEP_UNLISTED)
    }

    /// Remove the copies whose sha256 `listed` does not hold, and the temp
    /// files of killed runs, once older than `keep_unlisted`: copies are
    /// cheap to make again, but nothing else ever removes them. Returns how
    /// many files went; a file that cannot be read or removed is skipped.
    pub fn prune(&self, listed: &HashSet<&str>, keep_unlisted: Duration) -> io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let in_use = name
                .strip_suffix(".zst")
                .is_some_and(|sha| listed.contains(sha));
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok());
            if in_use || !entry.path().is_file() || age.is_none_or(|a| a < keep_unlisted) {
                continue;
            }
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A zstd frame (with its content checksum) holding `data`.
pub fn zstd_frame(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = zstd::Encoder::new(Vec::new(), LEVEL)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(true)?;
    encoder.write_all(data)?;
    encoder.finish()
}

/// A small file (under [`MIN_SIZE`], not worth a cached copy) as one zstd
/// frame, made now from content checked against its manifest entry.
pub fn frame_of(source: &Path, file: &BundleFile) -> io::Result<Vec<u8>> {
    let data = std::fs::read(source)?;
    let actual = hex::encode(Sha256::digest(&data));
    if data.len() as u64 != file.size || actual != file.sha256 {
        return Err(changed(
            source,
            format!(
                "{} bytes with sha256 {actual}, the bundle manifest says {} bytes with {}",
                data.len(),
                file.size,
                file.sha256
            ),
        ));
    }
    zstd_frame(&data)
}

fn changed(source: &Path, what: String) -> io::Error {
    io::Error::other(format!(
        "{} changed since the bundle was verified: {what}",
        source.display()
    ))
}

/// Compress `source` into `dir/<sha256>.zst` unless a complete copy is
/// already there.
fn compress(dir: &Path, source: &Path, file: &BundleFile) -> io::Result<PathBuf> {
    let dest = dir.join(format!("{}.zst", file.sha256));
    if dest.is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir)?;
    let started = std::time::Instant::now();
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut encoder = zstd::Encoder::new(io::BufWriter::new(tmp), LEVEL)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(file.size))?;
    // On an error return the temp file is removed on drop.
    let changed = |what: String| changed(source, what);
    let copied = copy_hashed(&mut std::fs::File::open(source)?, &mut encoder, file.size)?;
    let Some((read, actual)) = copied else {
        return Err(changed(format!("more than {} bytes", file.size)));
    };
    if read != file.size || actual != file.sha256 {
        return Err(changed(format!(
            "{read} bytes with sha256 {actual}, the bundle manifest says {} bytes with {}",
            file.size, file.sha256
        )));
    }
    let tmp = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
    tmp.persist(&dest).map_err(|e| e.error)?;
    tracing::debug!(
        file = %source.display(),
        bytes = file.size,
        compressed = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0),
        elapsed = ?started.elapsed(),
        "compressed for transfer"
    );
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_file(data: &[u8]) -> BundleFile {
        BundleFile {
            version: "1".into(),
            sha256: hex::encode(Sha256::digest(data)),
            size: data.len() as u64,
            source: "test".into(),
            executable: true,
            image: None,
            recipe: None,
        }
    }

    #[tokio::test]
    async fn compressed_copy_round_trips_and_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let src = dir.path().join("bin");
        std::fs::write(&src, &data).unwrap();
        let file = bundle_file(&data);
        let cache = CompressedCache::new(dir.path().join("zst"));
        let (a, b) = tokio::join!(cache.get(&src, &file), cache.get(&src, &file));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b);
        let packed = std::fs::read(&a).unwrap();
        assert!(packed.len() * 10 < data.len(), "{} bytes", packed.len());
        assert_eq!(zstd::decode_all(&packed[..]).unwrap(), data);
        // Only the finished copy is in the directory (no temp files left).
        assert_eq!(
            std::fs::read_dir(dir.path().join("zst")).unwrap().count(),
            1
        );
        // A second cache (another process) reuses the file.
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        let again = CompressedCache::new(dir.path().join("zst"));
        let c = again.get(&src, &file).await.unwrap();
        assert_eq!(std::fs::metadata(&c).unwrap().modified().unwrap(), mtime);
    }

    #[tokio::test]
    async fn prune_removes_old_copies_no_bundle_lists_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompressedCache::new(dir.path().join("zst"));
        assert_eq!(cache.prune(&HashSet::new(), Duration::ZERO).unwrap(), 0);
        let (listed, unlisted) = (b"in the bundle".repeat(1000), b"an old build".repeat(1000));
        let mut copies = vec![];
        for data in [&listed, &unlisted] {
            let src = dir.path().join("src");
            std::fs::write(&src, data).unwrap();
            copies.push(cache.get(&src, &bundle_file(data)).await.unwrap());
        }
        // A temp file a killed run left behind, and a directory.
        let leftover = dir.path().join("zst").join(".tmpAbC123");
        std::fs::write(&leftover, b"half a copy").unwrap();
        std::fs::create_dir(dir.path().join("zst").join("sub")).unwrap();
        let keep = bundle_file(&listed).sha256;
        let keep = HashSet::from([keep.as_str()]);
        // Young files stay whatever lists them.
        assert_eq!(cache.prune(&keep, KEEP_UNLISTED).unwrap(), 0);
        assert!(copies[1].is_file() && leftover.is_file());
        assert_eq!(cache.prune(&keep, Duration::ZERO).unwrap(), 2);
        assert!(copies[0].is_file(), "a listed copy is kept");
        assert!(!copies[1].exists() && !leftover.exists());
        assert!(dir.path().join("zst").join("sub").is_dir());
    }

    #[tokio::test]
    async fn a_file_that_differs_from_its_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bin");
        std::fs::write(&src, b"what the manifest says").unwrap();
        let file = bundle_file(b"what the manifest says");
        let cache = CompressedCache::new(dir.path().join("zst"));
        for changed in [
            &b"something else, same size"[..22],
            b"longer than the manifest says",
        ] {
            std::fs::write(&src, changed).unwrap();
            let err = cache.get(&src, &file).await.unwrap_err();
            assert!(
                err.to_string()
                    .contains("changed since the bundle was verified"),
                "{err}"
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("zst")).unwrap().count(),
            0
        );
    }
}
