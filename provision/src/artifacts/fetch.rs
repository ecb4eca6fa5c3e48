//! The production path: artifacts fetched from `Cluster.spec.artifacts.baseUrl`
//! with a sha256 pinned per file.
//!
//! A download is streamed into a temporary file next to its destination while
//! being hashed; only when the hash equals the pin is it renamed into the
//! cache. A wrong checksum therefore leaves nothing behind, and a reader of
//! the cache never sees a partial or unverified file.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use kubeup_crds::cluster::Artifacts;
use sha2::{Digest, Sha256};

use super::digest::{filled, sha256_file};

/// Failure to fetch or verify one artifact.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("artifacts.baseUrl {url:?} is not an http:// or https:// URL")]
    BadBaseUrl { url: String },
    #[error("artifacts.sha256 pins {file} to {sha256:?}, which is not 64 hex digits")]
    BadPin { file: String, sha256: String },
    #[error(
        "no sha256 is pinned for {file} in artifacts.sha256; add it to fetch {file} from the base URL"
    )]
    NotPinned { file: String },
    #[error("artifact name {file:?} is not a plain relative path")]
    BadName { file: String },
    #[error("failed to fetch {url}: {source}")]
    Request {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("failed to fetch {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "refused {file} from {url}: its sha256 is {actual} but artifacts.sha256 pins {expected}; nothing was cached"
    )]
    Checksum {
        file: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("failed to write {path} into the artifact cache: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    /// A stable reason for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            FetchError::BadBaseUrl { .. }
            | FetchError::BadPin { .. }
            | FetchError::NotPinned { .. }
            | FetchError::BadName { .. } => "InvalidArtifactSpec",
            FetchError::Request { .. } | FetchError::Status { .. } => "ArtifactDownloadFailed",
            FetchError::Checksum { .. } => "ArtifactChecksumMismatch",
            FetchError::Io { .. } => "ArtifactCacheWriteFailed",
        }
    }
}

/// A base URL serving the bundle layout, with the sha256 pinned per file.
#[derive(Clone, Debug)]
pub struct RemoteArtifacts {
    base_url: String,
    sha256: BTreeMap<String, String>,
    agent: ureq::Agent,
}

impl RemoteArtifacts {
    /// Validate the base URL and every pin up front, so a typo fails before
    /// any host is touched.
    pub fn new(base_url: &str, sha256: BTreeMap<String, String>) -> Result<Self, FetchError> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(FetchError::BadBaseUrl {
                url: base_url.to_owned(),
            });
        }
        for (file, sum) in &sha256 {
            check_name(file)?;
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FetchError::BadPin {
                    file: file.clone(),
                    sha256: sum.clone(),
                });
            }
        }
        let sha256 = sha256
            .into_iter()
            .map(|(file, sum)| (file, sum.to_ascii_lowercase()))
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            // The system trust store, so a mirror with a private CA works
            // once that CA is installed on the workstation.
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            // Per read, not per download: a slow mirror may take minutes for
            // 130 MiB but must never stall silently.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            sha256,
            agent,
        })
    }

    /// The remote source of a cluster's `spec.artifacts`, if it names a base URL.
    pub fn from_spec(spec: &Artifacts) -> Result<Option<Self>, FetchError> {
        spec.base_url
            .as_deref()
            .map(|url| Self::new(url, spec.sha256.clone()))
            .transpose()
    }

    /// The file names with a pinned sha256.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.sha256.keys().map(String::as_str)
    }

    /// `cache_dir/file`, verified against its pin: reused when already there
    /// and intact, otherwise downloaded from `<baseUrl>/<file>`. The
    /// blocking download runs on tokio's blocking pool.
    pub async fn fetch(&self, file: &str, cache_dir: &Path) -> Result<PathBuf, FetchError> {
        let (this, file, cache_dir) = (self.clone(), file.to_owned(), cache_dir.to_owned());
        let path = cache_dir.join(&file);
        tokio::task::spawn_blocking(move || this.fetch_blocking(&file, &cache_dir))
            .await
            // The task panicked or the runtime is shutting down.
            .unwrap_or_else(|e| {
                Err(FetchError::Io {
                    path,
                    source: std::io::Error::other(e),
                })
            })
    }

    /// [`fetch`](Self::fetch) for callers outside an async runtime.
    pub fn fetch_blocking(&self, file: &str, cache_dir: &Path) -> Result<PathBuf, FetchError> {
        check_name(file)?;
        let expected = self.sha256.get(file).ok_or_else(|| FetchError::NotPinned {
            file: file.to_owned(),
        })?;
        let dest = cache_dir.join(file);
        if sha256_file(&dest).is_ok_and(|(_, sum)| sum == *expected) {
            tracing::debug!(file, path = %dest.display(), "artifact already cached");
            return Ok(dest);
        }
        let url = format!("{}/{file}", self.base_url);
        let parent = dest.parent().unwrap_or(cache_dir).to_owned();
        let io_err = |source| FetchError::Io {
            path: dest.clone(),
            source,
        };
        std::fs::create_dir_all(&parent).map_err(io_err)?;
        // Same directory as the destination, so the final rename is atomic;
        // dropped (and so deleted) on every early return below.
        let mut temp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(&parent)
            .map_err(io_err)?;
        let actual = self.download(&url, temp.as_file_mut(), &dest)?;
        if actual != *expected {
            return Err(FetchError::Checksum {
                file: file.to_owned(),
                url,
                expected: expected.clone(),
                actual,
            });
        }
        temp.persist(&dest).map_err(|e| io_err(e.error))?;
        tracing::info!(file, %url, path = %dest.display(), "artifact fetched and verified");
        Ok(dest)
    }

    /// Stream `url` into `out`, returning the sha256 of what was written.
    fn download(
        &self,
        url: &str,
        out: &mut std::fs::File,
        dest: &Path,
    ) -> Result<String, FetchError> {
        let request_err = |source| FetchError::Request {
            url: url.to_owned(),
            source: Box::new(source),
        };
        let io_err = |source| FetchError::Io {
            path: dest.to_owned(),
            source,
        };
        let mut response = self.agent.get(url).call().map_err(request_err)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        // No size limit: the pinned checksum, not a cap, decides what is kept.
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(request_err(ureq::Error::Io(e))),
            };
            let chunk = filled(&buf, n).map_err(io_err)?;
            hasher.update(chunk);
            out.write_all(chunk).map_err(io_err)?;
        }
        out.sync_all().map_err(io_err)?;
        Ok(hex::encode(hasher.finalize()))
    }
}

fn check_name(file: &str) -> Result<(), FetchError> {
    let plain = !file.is_empty()
        && Path::new(file)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(FetchError::BadName {
            file: file.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(file: &str, sum: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(file.to_owned(), sum.to_owned())])
    }

    #[test]
    fn validates_spec_before_any_download() {
        let good = "a".repeat(64);
        assert!(RemoteArtifacts::new("ftp://x", pins("f", &good)).is_err());
        assert!(matches!(
            RemoteArtifacts::new("http://x", pins("f", "abc")),
            Err(FetchError::BadPin { .. })
        ));
        assert!(matches!(
            RemoteArtifacts::new("http://x", pins("../f", &good)),
            Err(FetchError::BadName { .. })
        ));
        assert!(RemoteArtifacts::new("https://x/", pins("bin/etcd", &good)).is_ok());
    }
}
