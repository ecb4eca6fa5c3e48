//! Pod-network and add-on parts of the bundle: flannel's version stamp, the
//! smoke-test image, CoreDNS and metrics-server (each wrapped into an OCI
//! archive by `oci.rs` and imported into every node's containerd; no
//! registry anywhere).

use std::path::Path;

use anyhow::{Context, Result, bail};
use kubeup_provision::artifacts::BundleFile;
use sha2::{Digest, Sha256};

use super::components::describe;
use super::{Ctx, debian, go};
use crate::oci;

/// The smoke-test image: Debian's busybox-static and `nettest`
/// (hack/bundle/testimage: TCP throughput and connect latency), one layer.
/// Pods run `busybox httpd`, `busybox wget`, `busybox nslookup`, `nettest`.
pub const TEST_IMAGE: &str = "kubeup.dev/busybox:test";
/// Bundle path of [`TEST_IMAGE`].
pub const TEST_IMAGE_FILE: &str = "images/busybox.tar";

/// The cluster DNS image: CoreDNS from hack/bundle/coredns (its version is
/// the module's, checked at build time), one static binary, one layer.
pub use kubeup_provision::hostplan::network::COREDNS_IMAGE;
/// Bundle path of [`COREDNS_IMAGE`].
pub const COREDNS_IMAGE_FILE: &str = "images/coredns.tar";
const COREDNS_MODULE: &str = "github.com/coredns/coredns";

/// The resource-metrics API (`kubectl top`): metrics-server from
/// hack/bundle/metrics-server (upstream's `cmd/metrics-server`, its version
/// the module's, checked at build time), one static binary, one layer.
pub use kubeup_provision::hostplan::network::METRICS_SERVER_IMAGE;
/// Bundle path of [`METRICS_SERVER_IMAGE`].
pub const METRICS_SERVER_IMAGE_FILE: &str = "images/metrics-server.tar";
const METRICS_SERVER_MODULE: &str = "sigs.k8s.io/metrics-server";
const METRICS_SERVER_PACKAGE: &str = "sigs.k8s.io/metrics-server/cmd/metrics-server";
/// Recipe directory of metrics-server under `hack/bundle/`.
const METRICS_SERVER_DIR: &str = "metrics-server";

/// `-X` flag giving flanneld its version (`flanneld --version`).
pub fn flannel_stamp(version: &str) -> Vec<String> {
    vec![format!(
        "github.com/flannel-io/flannel/pkg/version.Version={version}"
    )]
}

pub fn build_test_image(ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>> {
    let unpacked = debian::fetch("busybox-static", &staging.join(".deb"))?;
    let nettest = staging.join(".nettest");
    let build = go::Build {
        package: ".",
        tags: &[],
        xflags: vec![],
        out: nettest.clone(),
    };
    go::build(&ctx.cache_root, &ctx.recipes.join("testimage"), &build)?;
    let out = staging.join(TEST_IMAGE_FILE);
    std::fs::create_dir_all(out.parent().unwrap())?;
    let spec = oci::ImageSpec {
        name: TEST_IMAGE.into(),
        files: vec![
            oci::ImageFile {
                path: "/bin/busybox".into(),
                content: oci::Content::Path(unpacked.root.join("bin/busybox")),
                mode: 0o755,
            },
            oci::ImageFile {
                path: "/bin/nettest".into(),
                content: oci::Content::Path(nettest.clone()),
                mode: 0o755,
            },
        ],
        entrypoint: vec!["/bin/busybox".into()],
        env: vec!["PATH=/bin".into()],
        user: "0:0".into(),
    };
    oci::write_image_archive(&spec, &out)?;
    std::fs::remove_dir_all(staging.join(".deb"))?;
    std::fs::remove_file(nettest)?;
    let mut file = describe(
        &out,
        &unpacked.version,
        format!("debian:busybox-static={}", unpacked.version),
        false,
    )?;
    file.image = Some(TEST_IMAGE.into());
    Ok(vec![(TEST_IMAGE_FILE.into(), file)])
}

pub fn build_coredns_image(ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>> {
    let dir = ctx.recipes.join("coredns");
    let (version, _) = go::module_version(&ctx.cache_root, &dir, COREDNS_MODULE)?;
    if !COREDNS_IMAGE.ends_with(&format!(":{version}")) {
        bail!(
            "{} requires {COREDNS_MODULE} {version}, but the image is named {COREDNS_IMAGE}; update addons.rs",
            dir.display()
        );
    }
    let binary = staging.join(".coredns");
    let build = go::Build {
        package: ".",
        tags: &[],
        xflags: vec![],
        out: binary.clone(),
    };
    go::build(&ctx.cache_root, &dir, &build)?;
    let out = staging.join(COREDNS_IMAGE_FILE);
    std::fs::create_dir_all(out.parent().unwrap())?;
    let spec = oci::ImageSpec {
        name: COREDNS_IMAGE.into(),
        files: vec![oci::ImageFile {
            path: "/coredns".into(),
            content: oci::Content::Path(binary.clone()),
            mode: 0o755,
        }],
        entrypoint: vec!["/coredns".into()],
        env: vec![],
        // root, but the Deployment drops every capability except
        // NET_BIND_SERVICE (port 53); upstream's non-root image needs a
        // file capability on the binary, which this one-layer writer has no
        // way to set.
        user: "0:0".into(),
    };
    oci::write_image_archive(&spec, &out)?;
    std::fs::remove_file(binary)?;
    let mut file = describe(
        &out,
        &version,
        format!("go:{COREDNS_MODULE}@{version}"),
        false,
    )?;
    file.image = Some(COREDNS_IMAGE.into());
    Ok(vec![(COREDNS_IMAGE_FILE.into(), file)])
}

/// `-X` flags giving metrics-server its version (`metrics-server --version`
/// prints client-go's `gitVersion`, as upstream's Makefile sets it); the
/// build date is the tag's release time, so the same recipe gives the same
/// bytes.
pub fn metrics_server_stamp(version: &str, released: &str) -> Vec<String> {
    let pkg = "k8s.io/client-go/pkg/version";
    vec![
        format!("{pkg}.gitVersion={version}"),
        format!("{pkg}.gitTreeState=clean"),
        format!("{pkg}.buildDate={released}"),
    ]
}

/// A digest of everything metrics-server's image depends on in this repo:
/// the image name, hack/bundle/metrics-server, this file and the image
/// writer. A change to any of them rebuilds the image.
pub fn metrics_server_recipe(ctx: &Ctx) -> Result<String> {
    let mut h = Sha256::new();
    h.update("metrics-server");
    h.update(ctx.kubernetes_version.as_bytes());
    h.update(METRICS_SERVER_IMAGE);
    let dir = ctx.recipes.join(METRICS_SERVER_DIR);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("failed to read recipe directory {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        h.update(path.file_name().unwrap().as_encoded_bytes());
        h.update(std::fs::read(&path)?);
    }
    h.update(include_str!("addons.rs"));
    h.update(include_str!("../oci.rs"));
    Ok(hex::encode(h.finalize()))
}

pub fn build_metrics_server_image(ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>> {
    let dir = ctx.recipes.join(METRICS_SERVER_DIR);
    let (version, released) = go::module_version(&ctx.cache_root, &dir, METRICS_SERVER_MODULE)?;
    if !METRICS_SERVER_IMAGE.ends_with(&format!(":{version}")) {
        bail!(
            "{} requires {METRICS_SERVER_MODULE} {version}, but the image is named {METRICS_SERVER_IMAGE}; update network.rs",
            dir.display()
        );
    }
    let binary = staging.join(".metrics-server");
    let build = go::Build {
        package: METRICS_SERVER_PACKAGE,
        tags: &[],
        xflags: metrics_server_stamp(&version, &released),
        out: binary.clone(),
    };
    go::build(&ctx.cache_root, &dir, &build)?;
    let out = staging.join(METRICS_SERVER_IMAGE_FILE);
    std::fs::create_dir_all(out.parent().unwrap())?;
    let spec = oci::ImageSpec {
        name: METRICS_SERVER_IMAGE.into(),
        files: vec![oci::ImageFile {
            path: "/metrics-server".into(),
            content: oci::Content::Path(binary.clone()),
            mode: 0o755,
        }],
        entrypoint: vec!["/metrics-server".into()],
        env: vec![],
        // nobody, as upstream's image: it listens on 4443 (no privileged
        // port) and needs no file it does not get from a volume.
        user: "65534:65534".into(),
    };
    oci::write_image_archive(&spec, &out)?;
    std::fs::remove_file(binary)?;
    let mut file = describe(
        &out,
        &version,
        format!("go:{METRICS_SERVER_MODULE}@{version}"),
        false,
    )?;
    file.image = Some(METRICS_SERVER_IMAGE.into());
    Ok(vec![(METRICS_SERVER_IMAGE_FILE.into(), file)])
}
