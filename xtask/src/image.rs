//! `cargo xtask image`: the operator's OCI image without a registry or a
//! container runtime. The `kubeup-operator` binary (stripped) plus the glibc
//! shared libraries `ldd` names, in one layer, written into the bundle as
//! `images/kubeup-operator.tar` and listed in `bundle.json`, so `kubeup up`
//! pushes and imports it with the other images.
//!
//! Run it after `cargo xtask bundle` (which keeps only its own files in
//! `bundle.json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION;
use kubeup_provision::artifacts::{self, BundleFile};

use crate::oci::{Content, ImageFile, ImageSpec, write_image_archive};

/// Where the image goes inside the bundle.
pub const IMAGE_FILE: &str = "images/kubeup-operator.tar";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Build a debug binary: quicker to rebuild while iterating, but twice
    /// the size, twice the memory and slower SSH (the image that tests,
    /// benchmarks and `up` use is a release build).
    #[arg(long)]
    debug: bool,
    /// Bundle directory to write into (default: the cache's bundle).
    #[arg(long)]
    bundle_dir: Option<PathBuf>,
}

/// `kubeup.dev/kubeup-operator:<crate version>`: what the chart names.
pub fn image_name() -> String {
    format!("kubeup.dev/kubeup-operator:{}", env!("CARGO_PKG_VERSION"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target"))
}

pub fn run(args: Args) -> Result<()> {
    let bundle = args
        .bundle_dir
        .unwrap_or_else(|| artifacts::default_bundle_dir(DEFAULT_KUBERNETES_VERSION));
    let mut manifest = artifacts::load(&bundle).with_context(|| {
        format!(
            "no bundle in {} (run `cargo xtask bundle`)",
            bundle.display()
        )
    })?;

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(crate::repo_root()).args([
        "build",
        "-p",
        "kubeup-operator",
        "--bin",
        "kubeup-operator",
    ]);
    if !args.debug {
        build.arg("--release");
    }
    let status = build.status().context("failed to run cargo build")?;
    if !status.success() {
        bail!("cargo build of kubeup-operator failed");
    }
    let profile = if args.debug { "debug" } else { "release" };
    let binary = target_dir().join(profile).join("kubeup-operator");

    let work = tempfile::tempdir()?;
    let stripped = work.path().join("kubeup-operator");
    let out = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&binary)
        .output()
        .context("failed to run strip (binutils)")?;
    if !out.status.success() {
        bail!("strip failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    let mut files = vec![ImageFile {
        path: "/usr/local/bin/kubeup-operator".into(),
        content: Content::Path(stripped.clone()),
        mode: 0o755,
    }];
    for (in_image, on_disk) in shared_libraries(&stripped)? {
        files.push(ImageFile {
            path: in_image,
            content: Content::Path(on_disk),
            mode: 0o755,
        });
    }
    let name = image_name();
    let spec = ImageSpec {
        name: name.clone(),
        files,
        entrypoint: vec!["/usr/local/bin/kubeup-operator".into()],
        env: vec!["PATH=/usr/local/bin".into()],
        // The operator's own uid (the chart's runAsUser), not nobody's.
        user: format!(
            "{uid}:{uid}",
            uid = kubeup_provision::hostplan::layout::OPERATOR_UID
        ),
    };
    let dest = bundle.join(IMAGE_FILE);
    std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
    let tmp = bundle.join("images/.kubeup-operator.tar.tmp");
    write_image_archive(&spec, &tmp)?;
    std::fs::rename(&tmp, &dest)?;
    let (size, sha256) = artifacts::sha256_file(&dest)?;
    manifest.files.insert(
        IMAGE_FILE.into(),
        BundleFile {
            version: env!("CARGO_PKG_VERSION").into(),
            sha256: sha256.clone(),
            size,
            source: format!("kubeup:operator ({profile})"),
            executable: false,
            image: Some(name.clone()),
            recipe: None,
        },
    );
    manifest.save(&bundle)?;
    println!(
        "{name}: {} ({:.1} MiB, sha256 {})",
        dest.display(),
        size as f64 / 1048576.0,
        &sha256[..12]
    );
    Ok(())
}

/// The shared libraries `ldd` lists for `binary`: (path in the image, file
/// on disk with symlinks resolved). The loader keeps its absolute path
/// (`/lib64/ld-linux-x86-64.so.2`), libraries go to the directory ldd
/// found them in.
fn shared_libraries(binary: &Path) -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("failed to run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(vec![]);
    }
    parse_ldd(&text)
        .into_iter()
        .map(|p| {
            let real = std::fs::canonicalize(&p)
                .with_context(|| format!("ldd names {p}, which does not exist"))?;
            Ok((p, real))
        })
        .collect()
}

/// Paths from `ldd` output lines (`libc.so.6 => /lib/…/libc.so.6 (0x…)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`); the vDSO has no file.
pub fn parse_ldd(text: &str) -> Vec<String> {
    let mut paths: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn the_image_is_what_the_chart_names() {
        let values =
            std::fs::read_to_string(crate::repo_root().join("charts/kubeup/values.yaml")).unwrap();
        assert!(values.contains("repository: kubeup.dev/kubeup-operator"));
        let chart =
            std::fs::read_to_string(crate::repo_root().join("charts/kubeup/Chart.yaml")).unwrap();
        assert!(
            chart.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
            "Chart.yaml appVersion must be the crate version"
        );
        assert_eq!(
            image_name(),
            format!("kubeup.dev/kubeup-operator:{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
