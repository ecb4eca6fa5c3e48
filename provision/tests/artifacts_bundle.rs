//! The bundle built by `cargo xtask bundle`: every binary runs and reports
//! the version the manifest records, and the hand-made pause image imports
//! into the bundle's own containerd.
//!
//! These tests need the bundle and fail (never skip) when it is absent.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION;
use kubeup_provision::artifacts::{self, BundleManifest};

/// The verified bundle, or a failure that says how to build it.
fn bundle() -> (PathBuf, BundleManifest) {
    let dir = artifacts::default_bundle_dir(DEFAULT_KUBERNETES_VERSION);
    match artifacts::load_verified(&dir) {
        Ok(manifest) => (dir, manifest),
        Err(e) => panic!(
            "these tests need the Kubernetes bundle in {}: {e}\n\
             build it with `cargo xtask bundle` (≈10 min the first time, seconds after)",
            dir.display()
        ),
    }
}

/// stdout + stderr of a successful run (some tools print versions on stderr).
fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

#[test]
fn every_binary_prints_its_version() {
    let (dir, manifest) = bundle();
    let version = |name: &str| {
        let (_, file) = manifest
            .resolve(name)
            .unwrap_or_else(|| panic!("{name} is not in bundle.json"));
        file.version.trim_start_matches('v').to_owned()
    };
    // (bundle path, arguments, what the output must contain)
    let k8s = format!("Kubernetes {DEFAULT_KUBERNETES_VERSION}");
    let cases: Vec<(&str, &[&str], String)> = vec![
        (
            "bin/kubectl",
            &["version", "--client"],
            format!("Client Version: {DEFAULT_KUBERNETES_VERSION}"),
        ),
        ("bin/kube-apiserver", &["--version"], k8s.clone()),
        ("bin/kube-controller-manager", &["--version"], k8s.clone()),
        ("bin/kube-scheduler", &["--version"], k8s.clone()),
        ("bin/kubelet", &["--version"], k8s.clone()),
        ("bin/kube-proxy", &["--version"], k8s),
        (
            "bin/etcd",
            &["--version"],
            format!("etcd Version: {}", version("bin/etcd")),
        ),
        (
            "bin/etcdctl",
            &["version"],
            format!("etcdctl version: {}", version("bin/etcdctl")),
        ),
        (
            "bin/containerd",
            &["--version"],
            version("bin/containerd").split('~').next().unwrap().into(),
        ),
        (
            "bin/ctr",
            &["--version"],
            "ctr github.com/containerd".into(),
        ),
        (
            "bin/runc",
            &["--version"],
            format!(
                "runc version {}",
                version("bin/runc").split('+').next().unwrap()
            ),
        ),
        (
            "bin/crictl",
            &["--version"],
            format!("crictl version v{}", version("bin/crictl")),
        ),
        (
            "bin/helm",
            &["version", "--short"],
            format!("v{}", version("bin/helm")),
        ),
    ];
    for (name, args, expected) in cases {
        let text = output(Command::new(dir.join(name)).args(args));
        assert!(
            text.contains(&expected),
            "{name} {args:?} printed {text:?}, expected {expected:?}"
        );
    }
    // CNI plugins answer the VERSION command of the CNI protocol.
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        let text = output(
            Command::new(dir.join("cni").join(plugin))
                .env("CNI_COMMAND", "VERSION")
                .stdin(Stdio::null()),
        );
        assert!(text.contains("supportedVersions"), "{plugin}: {text}");
    }
}

/// What a multi-call binary run without a component prints (it must fail).
fn usage(binary: &Path) -> String {
    let out = Command::new(binary).output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn multi_call_binary_names_its_components() {
    let (dir, _) = bundle();
    let text = usage(&dir.join("bin/hyperkube"));
    assert!(
        text.contains("kubelet") && text.contains("kube-apiserver"),
        "{text}"
    );
    // `hyperkube kubectl …` works like the kubectl symlink.
    let text =
        output(Command::new(dir.join("bin/hyperkube")).args(["kubectl", "version", "--client"]));
    assert!(text.contains(DEFAULT_KUBERNETES_VERSION), "{text}");
}

#[test]
fn kubenode_is_the_node_half_and_much_smaller() {
    let (dir, manifest) = bundle();
    let text = usage(&dir.join("bin/kubenode"));
    assert!(
        text.contains("usage: kubenode") && text.contains("kubelet") && text.contains("kube-proxy"),
        "{text}"
    );
    assert!(!text.contains("kube-apiserver"), "{text}");
    for cmd in ["kubelet", "kube-proxy"] {
        let text = output(Command::new(dir.join("bin/kubenode")).args([cmd, "--version"]));
        assert!(text.contains(DEFAULT_KUBERNETES_VERSION), "{cmd}: {text}");
    }
    // What every worker join uploads instead of hyperkube.
    let (node, full) = (
        manifest.files["bin/kubenode"].size,
        manifest.files["bin/hyperkube"].size,
    );
    assert!(
        node * 10 < full * 7,
        "kubenode {node} B vs hyperkube {full} B"
    );
}

/// A containerd started by the test, killed by PID when dropped (also when
/// the test panics), with everything under a temp dir.
struct Containerd {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start(bundle: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path();
        let socket = root.join("c.sock");
        // CRI off: it would look for CNI and cgroups; image import needs
        // only the content store, metadata and a snapshotter.
        let config = format!(
            "version = 2\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
            root.join("opt").display()
        );
        std::fs::write(root.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let child = Command::new(bundle.join("bin/containerd"))
            .arg("--config")
            .arg(root.join("config.toml"))
            .arg("--root")
            .arg(root.join("root"))
            .arg("--state")
            .arg(root.join("state"))
            .arg("--address")
            .arg(&socket)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("failed to start the bundle's containerd");
        let mut me = Self {
            child,
            socket,
            _dir: dir,
        };
        me.wait_ready(bundle);
        me
    }

    fn wait_ready(&mut self, bundle: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("containerd exited early ({status}): {}", self.log());
            }
            let ok = self
                .ctr(bundle)
                .arg("version")
                .output()
                .unwrap()
                .status
                .success();
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer in 20 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctr(&self, bundle: &Path) -> Command {
        let mut cmd = Command::new(bundle.join("bin/ctr"));
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"]);
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID; wait reaps it so no zombie
        // outlives the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pause_image_imports_into_containerd() {
    let (dir, manifest) = bundle();
    let image = manifest.files["images/pause.tar"]
        .image
        .clone()
        .expect("pause.tar names its image");
    assert_eq!(image, "registry.k8s.io/pause:3.10.1");
    let containerd = Containerd::start(&dir);
    // The native snapshotter unpacks the layer without overlay mounts, which
    // fail when the test's /tmp is itself on overlayfs.
    let text = output(
        containerd
            .ctr(&dir)
            .args(["images", "import", "--snapshotter", "native"])
            .arg(dir.join("images/pause.tar")),
    );
    assert!(text.contains("registry.k8s.io/pause:3.10.1"), "{text}");
    let list = output(containerd.ctr(&dir).args(["images", "ls", "--quiet"]));
    assert!(
        list.lines().any(|l| l == image),
        "ctr images ls does not list {image}: {list}"
    );
    let check = output(containerd.ctr(&dir).args(["images", "check"]));
    assert!(
        check
            .lines()
            .any(|l| l.starts_with(&image) && l.contains("complete")),
        "{check}"
    );
}
