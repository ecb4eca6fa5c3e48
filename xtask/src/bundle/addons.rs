//! Pod-network and add-on parts of the bundle: flannel's version stamp and
//! the smoke-test image (wrapped into an OCI archive by `oci.rs` and
//! imported into every node's containerd; no registry anywhere).

use std::path::Path;

use anyhow::Result;
use kubeup_provision::artifacts::BundleFile;

use super::components::describe;
use super::debian;
use crate::oci;

/// The smoke-test image: Debian's busybox-static, one layer. Pods run
/// `busybox nc`, `busybox httpd`, `busybox nslookup`.
pub const TEST_IMAGE: &str = "kubeup.dev/busybox:test";
/// Bundle path of [`TEST_IMAGE`].
pub const TEST_IMAGE_FILE: &str = "images/busybox.tar";

/// `-X` flag giving flanneld its version (`flanneld --version`).
pub fn flannel_stamp(version: &str) -> Vec<String> {
    vec![format!(
        "github.com/flannel-io/flannel/pkg/version.Version={version}"
    )]
}

pub fn build_test_image(staging: &Path) -> Result<Vec<(String, BundleFile)>> {
    let unpacked = debian::fetch("busybox-static", &staging.join(".deb"))?;
    let out = staging.join(TEST_IMAGE_FILE);
    std::fs::create_dir_all(out.parent().unwrap())?;
    let spec = oci::ImageSpec {
        name: TEST_IMAGE.into(),
        files: vec![oci::ImageFile {
            path: "/bin/busybox".into(),
            content: oci::Content::Path(unpacked.root.join("bin/busybox")),
            mode: 0o755,
        }],
        entrypoint: vec!["/bin/busybox".into()],
        env: vec!["PATH=/bin".into()],
        user: "0:0".into(),
    };
    oci::write_image_archive(&spec, &out)?;
    std::fs::remove_dir_all(staging.join(".deb"))?;
    let mut file = describe(
        &out,
        &unpacked.version,
        format!("debian:busybox-static={}", unpacked.version),
        false,
    )?;
    file.image = Some(TEST_IMAGE.into());
    Ok(vec![(TEST_IMAGE_FILE.into(), file)])
}
