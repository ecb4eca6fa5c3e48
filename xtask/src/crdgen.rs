//! `cargo xtask crdgen`: the CRD YAML, generated from the types in crds/.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Where the generated CRDs live; the chart installs them from here.
pub fn crd_path() -> PathBuf {
    crate::repo_root().join("charts/kubeup/crds/kubeup.dev.yaml")
}

pub fn run(check: bool) -> Result<()> {
    let path = crd_path();
    let generated = kubeup_crds::render_crds_yaml()?;
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current == generated {
        println!("{}: up to date", path.display());
        return Ok(());
    }
    if check {
        bail!(
            "{} is out of date: run `cargo xtask crdgen`",
            path.display()
        );
    }
    std::fs::write(&path, generated)
        .with_context(|| format!("failed to write {}", path.display()))?;
    println!("{}: written", path.display());
    Ok(())
}
