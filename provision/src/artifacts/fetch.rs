//! The production path: artifacts fetched from `Cluster.spec.artifacts.baseUrl`
//! with a sha256 pinned per file.
//!
//! A download is streamed into a temporary file next to its destination while
//! being hashed; only when the hash equals the pin is it renamed into the
//! cache. A wrong checksum therefore leaves nothing behind, and a reader of
//! the cache never sees a partial or unverified file.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use kubeup_crds::cluster::Artifacts;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::digest::sha256_file;

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
    #[error("failed to set up the HTTP client: {source}")]
    Client { source: reqwest::Error },
    #[error("failed to fetch {url}: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("failed to fetch {url}: HTTP {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
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
            FetchError::Client { .. } | FetchError::Request { .. } | FetchError::Status { .. } => {
                "ArtifactDownloadFailed"
            }
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
    client: reqwest::Client,
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
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            // Per read, not per download: a slow mirror may take minutes for
            // 130 MiB but must never stall silently.
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| FetchError::Client { source })?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            sha256,
            client,
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
    /// and intact, otherwise downloaded from `<baseUrl>/<file>`.
    pub async fn fetch(&self, file: &str, cache_dir: &Path) -> Result<PathBuf, FetchError> {
        check_name(file)?;
        let expected = self.sha256.get(file).ok_or_else(|| FetchError::NotPinned {
            file: file.to_owned(),
        })?;
        let dest = cache_dir.join(file);
        if self.cached(&dest, expected).await {
            tracing::debug!(file, path = %dest.display(), "artifact already cached");
            return Ok(dest);
        }
        let url = format!("{}/{file}", self.base_url);
        let parent = dest.parent().unwrap_or(cache_dir).to_owned();
        let io_err = |source| FetchError::Io {
            path: dest.clone(),
            source,
        };
        tokio::fs::create_dir_all(&parent).await.map_err(io_err)?;
        // Same directory as the destination, so the final rename is atomic;
        // dropped (and so deleted) on every early return below.
        let temp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(&parent)
            .map_err(io_err)?;
        let actual = self.download(&url, &temp, &dest).await?;
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

    async fn cached(&self, dest: &Path, expected: &str) -> bool {
        let dest = dest.to_owned();
        tokio::task::spawn_blocking(move || sha256_file(&dest))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|(_, sum)| sum == expected)
    }

    /// Stream `url` into `temp`, returning the sha256 of what was written.
    async fn download(
        &self,
        url: &str,
        temp: &tempfile::NamedTempFile,
        dest: &Path,
    ) -> Result<String, FetchError> {
        let request_err = |source| FetchError::Request {
            url: url.to_owned(),
            source,
        };
        let io_err = |source| FetchError::Io {
            path: dest.to_owned(),
            source,
        };
        let mut response = self.client.get(url).send().await.map_err(request_err)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status(),
            });
        }
        let mut out = tokio::fs::File::from_std(temp.reopen().map_err(io_err)?);
        let mut hasher = Sha256::new();
        while let Some(chunk) = response.chunk().await.map_err(request_err)? {
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(io_err)?;
        }
        out.flush().await.map_err(io_err)?;
        out.sync_all().await.map_err(io_err)?;
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
