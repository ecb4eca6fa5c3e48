//! The production path: files fetched from a base URL with pinned sha256,
//! here served from the real bundle by an HTTP server on 127.0.0.1.
//!
//! Needs the bundle (`cargo xtask bundle`); fails, never skips, without it.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use kubeup_crds::cluster::{Artifacts, DEFAULT_KUBERNETES_VERSION};
use kubeup_provision::artifacts::{self, BundleManifest, FetchError, RemoteArtifacts};

fn bundle() -> (PathBuf, BundleManifest) {
    let dir = artifacts::default_bundle_dir(DEFAULT_KUBERNETES_VERSION);
    match artifacts::load_verified(&dir) {
        Ok(manifest) => (dir, manifest),
        Err(e) => panic!(
            "these tests serve the Kubernetes bundle in {}: {e}\n\
             build it with `cargo xtask bundle` (≈10 min the first time, seconds after)",
            dir.display()
        ),
    }
}

/// A static file server for `root` on a random loopback port, stopped and
/// joined on drop. Counts the requests it answered.
struct FileServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    url: String,
    requests: Arc<AtomicUsize>,
}

impl FileServer {
    fn start(root: &Path) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let (srv, count, root) = (server.clone(), requests.clone(), root.to_owned());
        let thread = std::thread::spawn(move || {
            for request in srv.incoming_requests() {
                count.fetch_add(1, Ordering::SeqCst);
                let rel = request.url().trim_start_matches('/').to_owned();
                let file = (!rel.contains(".."))
                    .then(|| std::fs::File::open(root.join(&rel)).ok())
                    .flatten();
                let _ = match file {
                    Some(f) => request.respond(tiny_http::Response::from_file(f)),
                    None => request.respond(tiny_http::Response::empty(404)),
                };
            }
        });
        Self {
            server,
            thread: Some(thread),
            url,
            requests,
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pins as `Cluster.spec.artifacts.sha256` would carry them.
fn pins(manifest: &BundleManifest, names: &[&str]) -> BTreeMap<String, String> {
    names
        .iter()
        .map(|n| (n.to_string(), manifest.files[*n].sha256.clone()))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn fetches_verifies_and_caches_pinned_files() {
    let (dir, manifest) = bundle();
    let server = FileServer::start(&dir);
    let names = ["bin/etcd", "cni/bridge", "images/pause.tar"];
    let spec = Artifacts {
        bundle_dir: None,
        base_url: Some(format!("{}/", server.url)),
        sha256: pins(&manifest, &names),
    };
    let remote = RemoteArtifacts::from_spec(&spec).unwrap().unwrap();
    let cache = tempfile::tempdir().unwrap();
    for name in names {
        let path = remote.fetch(name, cache.path()).await.unwrap();
        assert_eq!(path, cache.path().join(name));
        let (size, sum) = artifacts::sha256_file(&path).unwrap();
        assert_eq!(
            (size, sum.as_str()),
            (
                manifest.files[name].size,
                manifest.files[name].sha256.as_str()
            )
        );
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), names.len());
    // Cached and intact: no second download.
    remote.fetch("bin/etcd", cache.path()).await.unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), names.len());
    // Corrupted in the cache: fetched again and repaired.
    std::fs::write(cache.path().join("cni/bridge"), b"garbage").unwrap();
    let path = remote.fetch("cni/bridge", cache.path()).await.unwrap();
    assert_eq!(
        artifacts::sha256_file(&path).unwrap().1,
        manifest.files["cni/bridge"].sha256
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), names.len() + 1);
    assert_eq!(
        files_in(cache.path()),
        ["bin/etcd", "cni/bridge", "images/pause.tar"]
    );
}

#[tokio::test]
async fn refuses_a_wrong_checksum_and_caches_nothing() {
    let (dir, manifest) = bundle();
    let server = FileServer::start(&dir);
    // crictl served, but pinned to runc's sum: what a tampered mirror looks like.
    let wrong = manifest.files["bin/runc"].sha256.clone();
    let actual = manifest.files["bin/crictl"].sha256.clone();
    let pins = BTreeMap::from([("bin/crictl".to_string(), wrong.clone())]);
    let remote = RemoteArtifacts::new(&server.url, pins).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = remote.fetch("bin/crictl", cache.path()).await.unwrap_err();
    match &err {
        FetchError::Checksum {
            file,
            expected,
            actual: got,
            ..
        } => {
            assert_eq!(file, "bin/crictl");
            assert_eq!(expected, &wrong);
            assert_eq!(got, &actual);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("bin/crictl") && msg.contains(&wrong) && msg.contains(&actual),
        "{msg}"
    );
    assert_eq!(err.category(), "ArtifactChecksumMismatch");
    // Not even a temp file is left behind.
    assert_eq!(files_in(cache.path()), Vec::<String>::new());
}

#[tokio::test]
async fn reports_missing_files_and_unpinned_names() {
    let (dir, _) = bundle();
    let server = FileServer::start(&dir);
    let pins = BTreeMap::from([("bin/nothing".to_string(), "0".repeat(64))]);
    let remote = RemoteArtifacts::new(&server.url, pins).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = remote.fetch("bin/nothing", cache.path()).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    let err = remote.fetch("bin/etcd", cache.path()).await.unwrap_err();
    assert!(matches!(err, FetchError::NotPinned { .. }), "{err}");
    // Nothing was asked of the server for the unpinned file.
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert_eq!(files_in(cache.path()), Vec::<String>::new());
}
