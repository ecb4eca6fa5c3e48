//! Go builds for the bundle: static, reproducible, with caches outside the
//! clone so a second machine-local build reuses ≈4.5 GB of modules and objects.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A `go` invocation in the module directory `dir` with the bundle's
/// environment: the installed toolchain only (etcd's go.mod names a newer
/// one that cannot be downloaded here), no cgo, caches under `cache_root`.
pub fn command(cache_root: &Path, dir: &Path) -> Command {
    let go_cache = cache_root.join("go");
    let mut cmd = Command::new("go");
    cmd.current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-modcacherw -buildvcs=false")
        .env("GOMODCACHE", go_cache.join("mod"))
        .env("GOCACHE", go_cache.join("build"))
        .env("CGO_ENABLED", "0");
    cmd
}

/// One `go build` of a main package into `out`.
pub struct Build<'a> {
    /// Package to build: `.` or an import path named by a `tool` line.
    pub package: &'a str,
    pub tags: &'a [&'a str],
    /// `-X importpath.name=value` settings, without the `-X`.
    pub xflags: Vec<String>,
    pub out: PathBuf,
}

pub fn build(cache_root: &Path, dir: &Path, b: &Build<'_>) -> Result<()> {
    // -s -w drop the symbol and DWARF tables (≈30% of the size); -trimpath
    // keeps build paths out so the output does not depend on where it ran.
    let mut ldflags = String::from("-s -w");
    for x in &b.xflags {
        ldflags.push_str(" -X ");
        ldflags.push_str(x);
    }
    let mut cmd = command(cache_root, dir);
    cmd.args(["build", "-trimpath", "-ldflags", &ldflags]);
    if !b.tags.is_empty() {
        cmd.args(["-tags", &b.tags.join(",")]);
    }
    cmd.arg("-o").arg(&b.out).arg(b.package);
    run(&mut cmd).with_context(|| format!("failed to build {} in {}", b.package, dir.display()))
}

/// `go list -m` of `module` in `dir`: (version, release time as RFC 3339).
pub fn module_version(cache_root: &Path, dir: &Path, module: &str) -> Result<(String, String)> {
    let out = command(cache_root, dir)
        .args([
            "list",
            "-m",
            "-f",
            r#"{{.Version}} {{.Time.UTC.Format "2006-01-02T15:04:05Z"}}"#,
            module,
        ])
        .output()
        .context("failed to run `go` (is Go ≥ 1.26 installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "go list -m {module} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let (version, time) = text
        .trim()
        .split_once(' ')
        .with_context(|| format!("unexpected `go list -m {module}` output {text:?}"))?;
    Ok((version.to_owned(), time.to_owned()))
}

/// Run with inherited output (a long build shows its progress), failing on a
/// non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", cmd.get_program());
    }
    Ok(())
}
