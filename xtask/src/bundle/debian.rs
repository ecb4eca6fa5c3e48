//! containerd, runc and the CNI plugins from Debian packages, unpacked
//! without installing anything into the system.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::go::run;

/// A downloaded and unpacked package.
pub struct Unpacked {
    pub version: String,
    pub root: PathBuf,
}

/// `apt-get download PACKAGE` (the candidate version of the configured
/// sources) into `work`, then `dpkg-deb -x` it to `work/root`.
pub fn fetch(package: &str, work: &Path) -> Result<Unpacked> {
    std::fs::create_dir_all(work)?;
    // Run as root without dropping to _apt: the staging directory lives under
    // the invoking user's cache, which _apt cannot write.
    let out = Command::new("apt-get")
        .current_dir(work)
        .args(["-q", "-o", "APT::Sandbox::User=root", "download", package])
        .output()
        .context("failed to run apt-get (the bundle needs a Debian/Ubuntu host)")?;
    if !out.status.success() {
        bail!(
            "apt-get download {package} failed: {}\n(if the package is unknown, run `apt-get update` first)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let deb = std::fs::read_dir(work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
        })
        .with_context(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                work.display()
            )
        })?;
    let version = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Version")
        .output()
        .context("failed to run dpkg-deb")?;
    if !version.status.success() {
        bail!("dpkg-deb -f {} Version failed", deb.display());
    }
    let root = work.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    Ok(Unpacked {
        version: String::from_utf8(version.stdout)?.trim().to_owned(),
        root,
    })
}
