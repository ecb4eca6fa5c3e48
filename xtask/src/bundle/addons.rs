//! Pod-network and add-on parts of the bundle: flannel's version stamp and
//! the smoke-test image (wrapped into an OCI archive by `oci.rs` and
//! imported into every node's containerd; no registry anywhere).

use std::path::Path;

use anyhow::{Result, bail};
use kubeup_provision::artifacts::BundleFile;

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
