//! `cargo xtask bundle`: the Kubernetes binary bundle, built from package
//! registries (Go module proxy, Debian) because release downloads are not
//! reachable everywhere kubeup is developed and tested.
//!
//! Layout of `${KUBEUP_CACHE:-~/.cache/kubeup}/bundle/<version>/`:
//! `bin/` (hyperkube and its symlinks, kubenode (kubelet and kube-proxy
//! alone, for workers), etcd, etcdctl, crictl, helm,
//! flanneld, containerd, containerd-shim-runc-v2, ctr, runc), `cni/`
//! (bridge, host-local, loopback, portmap), `images/pause.tar`,
//! `images/busybox.tar` (smoke tests), `images/coredns.tar`,
//! `images/metrics-server.tar`, `images/local-path-provisioner.tar`,
//! `images/traefik.tar`, `bundle.json`.
//!
//! Each component is cached: it is rebuilt only when one of its files is
//! missing, differs from its sha256 in `bundle.json`, or was made from an
//! older recipe. Builds happen in a staging directory beside the bundle and
//! are renamed into place, so an interrupted build never leaves half a file.

mod addons;
mod components;
mod debian;
mod go;
mod storage_ingress;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kubeup_provision::artifacts::{self, BundleFile, BundleManifest, ManifestError};

use components::HYPERKUBE_COMMANDS;

/// One independently cached unit of the bundle: rebuilt as a whole when any
/// of its files is missing or corrupt, or its recipe changed.
trait Part {
    fn name(&self) -> &'static str;
    /// Bundle paths of the regular files it produces.
    fn outputs(&self) -> Vec<&'static str>;
    /// A digest of everything in this repository its files depend on.
    fn recipe_digest(&self, ctx: &Ctx) -> Result<String>;
    /// Build into `staging` (same layout as the bundle) and describe each
    /// output; `recipe` is left for the caller to fill in.
    fn build(&self, ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>>;
}

impl Part for components::Component {
    fn name(&self) -> &'static str {
        self.name
    }
    fn outputs(&self) -> Vec<&'static str> {
        components::Component::outputs(self)
    }
    fn recipe_digest(&self, ctx: &Ctx) -> Result<String> {
        components::Component::recipe_digest(self, ctx)
    }
    fn build(&self, ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>> {
        components::Component::build(self, ctx, staging)
    }
}

/// metrics-server's image (addons.rs).
struct MetricsServer;

impl Part for MetricsServer {
    fn name(&self) -> &'static str {
        "metrics-server"
    }
    fn outputs(&self) -> Vec<&'static str> {
        vec![addons::METRICS_SERVER_IMAGE_FILE]
    }
    fn recipe_digest(&self, ctx: &Ctx) -> Result<String> {
        addons::metrics_server_recipe(ctx)
    }
    fn build(&self, ctx: &Ctx, staging: &Path) -> Result<Vec<(String, BundleFile)>> {
        addons::build_metrics_server_image(ctx, staging)
    }
}

/// Every part in build order: the components of components.rs, with the
/// metrics-server image beside the other add-on images, before the long
/// Kubernetes build.
fn parts() -> Vec<Box<dyn Part>> {
    let mut parts: Vec<Box<dyn Part>> = components::all()
        .into_iter()
        .map(|c| Box::new(c) as Box<dyn Part>)
        .collect();
    let at = parts
        .iter()
        .position(|p| p.name() == "kubernetes")
        .unwrap_or(parts.len());
    parts.insert(at, Box::new(MetricsServer));
    // The add-ons of `spec.addons` after it (Traefik is the longest build
    // after Kubernetes itself).
    parts.insert(at + 1, Box::new(storage_ingress::local_path()));
    parts.insert(at + 2, Box::new(storage_ingress::traefik()));
    parts
}

/// What the builders need to know.
pub struct Ctx {
    /// `hack/bundle/` in this repository.
    recipes: PathBuf,
    /// `${KUBEUP_CACHE:-~/.cache/kubeup}`: Go caches live under `go/`.
    cache_root: PathBuf,
    kubernetes_version: String,
}

#[derive(clap::Args)]
pub struct Args {
    /// Rebuild every component even when its files are intact.
    #[arg(long)]
    force: bool,
    /// Only check the bundle against bundle.json; exit 1 on any problem.
    #[arg(long, conflicts_with = "force")]
    verify: bool,
    /// Bundle directory [default: ${KUBEUP_CACHE:-~/.cache/kubeup}/bundle/<version>].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let kubernetes_version = kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION;
    let dir = args
        .dir
        .unwrap_or_else(|| artifacts::default_bundle_dir(kubernetes_version));
    if args.verify {
        return verify(&dir);
    }
    let ctx = Ctx {
        recipes: crate::repo_root().join("hack/bundle"),
        cache_root: artifacts::cache_root(),
        kubernetes_version: kubernetes_version.to_owned(),
    };
    build(&ctx, &dir, args.force)
}

fn verify(dir: &Path) -> Result<()> {
    let problems = artifacts::verify(dir)?;
    if problems.is_empty() {
        println!("bundle {} is complete and intact", dir.display());
        return Ok(());
    }
    for p in &problems {
        eprintln!("  {p}");
    }
    bail!(
        "bundle {} has {} problem(s); run `cargo xtask bundle` to repair it",
        dir.display(),
        problems.len()
    )
}

fn build(ctx: &Ctx, dir: &Path, force: bool) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut manifest = match artifacts::load(dir) {
        Ok(m) if m.kubernetes_version == ctx.kubernetes_version => m,
        Ok(_) => BundleManifest::new(&ctx.kubernetes_version),
        Err(ManifestError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            BundleManifest::new(&ctx.kubernetes_version)
        }
        Err(e) => {
            eprintln!("bundle: ignoring unusable manifest ({e}); checking every file again");
            BundleManifest::new(&ctx.kubernetes_version)
        }
    };
    // Beside the bundle, so moving a file into place is a rename on one
    // filesystem: atomic, never a partial copy.
    let staging = dir.with_file_name(format!(
        ".staging-{}",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    let components = parts();
    // The bundle directory is named after hack/bundle/parts: it must list
    // exactly what is built here.
    let names: Vec<&str> = components.iter().map(|c| c.name()).collect();
    if names != artifacts::bundle_parts() {
        bail!(
            "hack/bundle/parts lists {:?} but the bundle is built from {names:?}; update hack/bundle/parts",
            artifacts::bundle_parts()
        );
    }
    let mut summary: Vec<(&str, String, Duration)> = Vec::new();
    for component in &components {
        let t = Instant::now();
        let recipe = component.recipe_digest(ctx)?;
        let stale = if force {
            Some("--force".to_owned())
        } else {
            why_stale(&manifest, dir, &component.outputs(), &recipe)
        };
        let Some(reason) = stale else {
            summary.push((component.name(), "cached".into(), t.elapsed()));
            continue;
        };
        eprintln!("bundle: building {} ({reason})", component.name());
        reset_dir(&staging)?;
        let built = component
            .build(ctx, &staging)
            .with_context(|| format!("failed to build bundle component {}", component.name()))?;
        for (name, mut file) in built {
            file.recipe = Some(recipe.clone());
            let dest = dir.join(&name);
            std::fs::create_dir_all(dest.parent().unwrap())?;
            std::fs::rename(staging.join(&name), &dest)
                .with_context(|| format!("failed to move {name} into {}", dir.display()))?;
            manifest.files.insert(name, file);
        }
        // Saved after every component: an interrupted run keeps what it made.
        manifest.save(dir)?;
        summary.push((component.name(), "built".into(), t.elapsed()));
    }
    // Entries this command does not make (`cargo xtask image` adds the
    // operator image) stay while their file is intact; a broken one is
    // dropped so nothing ships it, and its own builder makes it again.
    let wanted: Vec<&str> = components.iter().flat_map(|c| c.outputs()).collect();
    manifest
        .files
        .retain(|name, file| wanted.contains(&name.as_str()) || file.check(dir, name).is_none());
    link_hyperkube(dir, &mut manifest)?;
    manifest.save(dir)?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }

    // Components found intact were just hashed; only a build needs the
    // whole bundle checked again (the final word on what was written).
    let built_any = summary.iter().any(|(_, status, _)| status == "built");
    let problems = if built_any {
        artifacts::verify(dir)?
    } else {
        Vec::new()
    };
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!(
            "bundle is inconsistent after building:\n  {}",
            list.join("\n  ")
        );
    }
    print_summary(dir, &manifest, &summary, started.elapsed());
    Ok(())
}

/// Why a component must be (re)built, or `None` when all its files are
/// present, intact and made from the current recipe.
fn why_stale(
    manifest: &BundleManifest,
    dir: &Path,
    outputs: &[&str],
    recipe: &str,
) -> Option<String> {
    outputs.iter().find_map(|name| {
        let Some(file) = manifest.files.get(*name) else {
            return Some(format!("{name} not in bundle.json"));
        };
        if file.recipe.as_deref() != Some(recipe) {
            return Some(format!("recipe of {name} changed"));
        }
        file.check(dir, name).map(|p| p.to_string())
    })
}

/// `bin/<command>` → `hyperkube` for every multi-call command; replaced
/// through a rename so a reader never finds the link missing.
fn link_hyperkube(dir: &Path, manifest: &mut BundleManifest) -> Result<()> {
    manifest.symlinks.clear();
    for cmd in HYPERKUBE_COMMANDS {
        let link = dir.join("bin").join(cmd);
        let current = std::fs::read_link(&link).ok();
        if current.as_deref() != Some(Path::new("hyperkube")) {
            let tmp = dir.join("bin").join(format!(".{cmd}.link"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink("hyperkube", &tmp)?;
            std::fs::rename(&tmp, &link)?;
        }
        manifest
            .symlinks
            .insert(format!("bin/{cmd}"), "hyperkube".into());
    }
    Ok(())
}

fn reset_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("failed to clear staging {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn print_summary(
    dir: &Path,
    manifest: &BundleManifest,
    summary: &[(&str, String, Duration)],
    total: Duration,
) {
    let bytes: u64 = manifest.files.values().map(|f| f.size).sum();
    println!("bundle {} ({})", dir.display(), manifest.kubernetes_version);
    for (name, status, took) in summary {
        println!("  {name:<14} {status:<7} {:>7.1}s", took.as_secs_f64());
    }
    println!(
        "  {} files, {} symlinks, {:.0} MiB, {:.1}s total",
        manifest.files.len(),
        manifest.symlinks.len(),
        bytes as f64 / (1024.0 * 1024.0),
        total.as_secs_f64()
    );
}
