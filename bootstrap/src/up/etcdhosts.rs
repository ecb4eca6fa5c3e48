//! Dedicated etcd hosts (`spec.etcd.external`): `up` brings their members
//! up before any controller, so the apiservers start against a healthy
//! etcd. Like the controllers, in two stages: every host is looked at
//! (its member name, whether it has data), then all converge at once (a new
//! etcd's members start together) and each waits until its member is
//! healthy. Growing or shrinking a running dedicated etcd is refused (see
//! [`check_growth`]): kubeup does the learner flow for stacked members only.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::FutureExt;
use futures::future::BoxFuture;
use kubeup_crds::cluster::ControllerHost;
use kubeup_provision::converge::reset_phases::OnHost;
use kubeup_provision::converge::{self, Changes, Role};
use kubeup_provision::hostplan::certs::CertPlan;
use kubeup_provision::hostplan::{EtcdMember, HostFile, etcdhost, layout};
use kubeup_provision::phase::{Effect, Live, Phase, PhaseKey, Procedure};
use kubeup_provision::ssh::{Command, Session};

use super::connect::{Connect, Link, with_causes};
use super::context::ControllerContext;
use super::phases::{RENEW_DAYS, would};
use crate::progress::Progress;

/// The phases on an etcd host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtcdHostPhase {
    Connect,
    Preflight,
    Install,
    Start,
    Healthy,
}

impl PhaseKey for EtcdHostPhase {
    fn name(self) -> &'static str {
        match self {
            EtcdHostPhase::Connect => "connect",
            EtcdHostPhase::Preflight => "preflight",
            EtcdHostPhase::Install => "etcd install",
            EtcdHostPhase::Start => "etcd start",
            EtcdHostPhase::Healthy => "etcd healthy",
        }
    }
}

/// How long a new member may take to find its peers.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(90);

type Step = dyn Phase<EtcdHostRun, EtcdHostPhase, anyhow::Error>;

/// Look, then converge.
fn stages() -> [Vec<&'static Step>; 2] {
    [
        vec![&Connect(EtcdHostPhase::Connect), &Preflight],
        vec![&Install, &Start, &Healthy],
    ]
}

/// What preflight found on an etcd host.
#[derive(Clone, Debug)]
struct Found {
    name: String,
    has_data: bool,
}

/// One etcd host's walk: its session, what preflight found, its plan and
/// what changed.
pub struct EtcdHostRun {
    link: Link,
    found: OnceLock<Found>,
    plan: OnceLock<(Vec<HostFile>, Vec<CertPlan>)>,
    changes: Mutex<Changes>,
}

impl AsRef<Link> for EtcdHostRun {
    fn as_ref(&self) -> &Link {
        &self.link
    }
}

impl EtcdHostRun {
    fn session(&self) -> Result<&Session> {
        Ok(self.link.session()?)
    }

    fn plan(&self) -> Result<&(Vec<HostFile>, Vec<CertPlan>)> {
        self.plan
            .get()
            .ok_or_else(|| anyhow!("the etcd host's plan is not rendered yet"))
    }

    fn merge(&self, c: Changes) {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(c);
    }
}

/// Converge every dedicated etcd host (`dry_run`: say what would change).
/// Returns what changed, each line naming its host.
pub async fn converge_all(
    ctx: &Arc<ControllerContext>,
    progress: &Progress,
    dry_run: bool,
    file: &std::path::Path,
) -> Result<Changes> {
    let mut runs: Vec<EtcdHostRun> = ctx
        .etcd_hosts()
        .iter()
        .map(|h| EtcdHostRun {
            link: Link::for_host(ctx.clone(), h.clone()),
            found: OnceLock::new(),
            plan: OnceLock::new(),
            changes: Mutex::new(Changes::default()),
        })
        .collect();
    let walked = walk(ctx, &runs, progress, dry_run, file).await;
    for run in &mut runs {
        run.link.close().await;
    }
    walked?;
    let mut changes = Changes::default();
    for run in &runs {
        let mut c = run
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        c.prefix_items(&run.link.host);
        changes.merge(c);
    }
    Ok(changes)
}

async fn walk(
    ctx: &ControllerContext,
    runs: &[EtcdHostRun],
    progress: &Progress,
    dry_run: bool,
    file: &std::path::Path,
) -> Result<()> {
    let command = if dry_run { "plan" } else { "up" };
    for (n, phases) in stages().into_iter().enumerate() {
        let results = futures::future::join_all(runs.iter().map(|run| {
            let procedure = Procedure::new(run.link.host.clone(), phases.clone());
            async move {
                let walked = procedure.apply_or_plan(run, progress, dry_run).await;
                walked.map_err(|f| super::explain(f, command, file, &run.link))
            }
        }))
        .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        if n == 0 {
            render_plans(ctx, runs)?;
        }
    }
    Ok(())
}

/// Every host was looked at: each member's plan names all members.
fn render_plans(ctx: &ControllerContext, runs: &[EtcdHostRun]) -> Result<()> {
    let found = runs
        .iter()
        .map(|r| {
            r.found
                .get()
                .cloned()
                .ok_or_else(|| anyhow!("{}: preflight found nothing", r.link.host))
        })
        .collect::<Result<Vec<_>>>()?;
    check_growth(runs, &found)?;
    let members: Vec<(String, String)> = found
        .iter()
        .zip(runs)
        .map(|(f, r)| (f.name.clone(), r.link.controller.address.clone()))
        .collect();
    let ca = std::fs::read(ctx.loaded.pki_dir().join("etcd/ca.crt"))
        .context("failed to read the etcd CA's certificate")?;
    let days = ctx.loaded.cluster.spec.certificates.leaf_days;
    for (run, (name, address)) in runs.iter().zip(&members) {
        let member = EtcdMember {
            name: name.clone(),
            address: address.clone(),
            kubernetes_version: ctx.manifest.kubernetes_version.clone(),
            cluster_name: ctx.loaded.name().to_string(),
            members: members.clone(),
            joins_existing: false,
        };
        let _ = run.plan.set((
            etcdhost::files(&member, &ca),
            etcdhost::certs(&member, days),
        ));
    }
    Ok(())
}

/// A dedicated etcd starts with all its members at once. A host without
/// data beside hosts with data would be a new member of a running etcd,
/// which needs the learner flow kubeup has for stacked members only:
/// refused before anything changes.
fn check_growth(runs: &[EtcdHostRun], found: &[Found]) -> Result<()> {
    let with_data: Vec<&str> = runs
        .iter()
        .zip(found)
        .filter(|(_, f)| f.has_data)
        .map(|(r, _)| r.link.host.as_str())
        .collect();
    let without: Vec<&str> = runs
        .iter()
        .zip(found)
        .filter(|(_, f)| !f.has_data)
        .map(|(r, _)| r.link.host.as_str())
        .collect();
    if !with_data.is_empty() && !without.is_empty() {
        bail!(
            "spec.etcd.external: {} run(s) etcd with data and {} would be new: adding a member to a running dedicated etcd is not supported; nothing was changed. Keep the list as it was when the cluster was made, or `kubeup reset` the new host(s) if they are leftovers",
            with_data.join(", "),
            without.join(", ")
        );
    }
    Ok(())
}

/// The member name: the spec's, or the host's name.
fn member_name(host: &ControllerHost, hostname: &str) -> Result<String> {
    let name = host.name.clone().unwrap_or_else(|| hostname.to_lowercase());
    if !kubeup_provision::config::is_node_name(&name) {
        bail!(
            "the etcd host's hostname {name:?} is not a valid member name; set its name in spec.etcd.external (lowercase letters, digits, '-' and '.')"
        );
    }
    Ok(name)
}

struct Preflight;

impl Phase<EtcdHostRun, EtcdHostPhase, anyhow::Error> for Preflight {
    fn key(&self) -> EtcdHostPhase {
        EtcdHostPhase::Preflight
    }
    fn title(&self) -> &'static str {
        "check the host can run an etcd member"
    }
    fn effect(&self) -> Effect {
        Effect::Observe
    }
    fn plan<'a>(&'a self, _: &'a EtcdHostRun) -> BoxFuture<'a, Result<Vec<String>>> {
        async { Ok(vec!["check the host".to_string()]) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, run: &'a EtcdHostRun, _: &'a Live) -> BoxFuture<'a, Result<String>> {
        async move {
            let session = run.session()?;
            let report = converge::preflight(session, Role::Etcd).await?;
            if let Some(text) = report.error_text() {
                bail!("the host is not ready; nothing was changed:\n{text}");
            }
            let probe = format!(
                "test -d {}/member && echo yes || echo no",
                layout::ETCD_DATA
            );
            let has_data = session
                .output(&Command::shell(probe).privileged())
                .await?
                .stdout_str()
                .trim()
                == "yes";
            let name = member_name(&run.link.controller, &report.hostname)?;
            let _ = run.found.set(Found { name, has_data });
            Ok(if has_data { "has data" } else { "new" }.to_string())
        }
        .map(with_causes)
        .boxed()
    }
}

struct Install;

impl Install {
    /// The etcd binaries, the certificates and the files.
    async fn converge(&self, run: &EtcdHostRun, dry_run: bool) -> Result<Changes> {
        let session = run.session()?;
        let ctx = &run.link.ctx;
        let mut manifest = ctx.manifest.clone();
        manifest
            .files
            .retain(|name, _| etcdhost::BINARIES.contains(&name.as_str()));
        manifest.symlinks.clear();
        let (files, certs) = run.plan()?;
        let mut c = converge::push_bundle(
            session,
            &ctx.bundle_dir,
            &manifest,
            Some(&ctx.compressed),
            None,
            dry_run,
        )
        .await?;
        c.merge(converge::ensure_certs(session, certs, &ctx.cas, RENEW_DAYS, dry_run).await?);
        c.merge(converge::write_files(session, files, dry_run).await?);
        let mut installed: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        installed.extend(
            certs
                .iter()
                .flat_map(|c| [c.cert_path.clone(), c.key_path.clone()]),
        );
        converge::record_installed(session, &installed, dry_run).await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<EtcdHostRun, EtcdHostPhase, anyhow::Error> for Install {
    fn key(&self) -> EtcdHostPhase {
        EtcdHostPhase::Install
    }
    fn title(&self) -> &'static str {
        "upload etcd, issue its certificates, write its unit"
    }
    fn plan<'a>(&'a self, run: &'a EtcdHostRun) -> BoxFuture<'a, Result<Vec<String>>> {
        async move { Ok(would(&self.converge(run, true).await?, "etcd is in place")) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, run: &'a EtcdHostRun, _: &'a Live) -> BoxFuture<'a, Result<String>> {
        async move {
            let c = self.converge(run, false).await?;
            Ok(format!(
                "{} uploaded, {} issued, {} written",
                c.uploaded.len(),
                c.issued.len(),
                c.written.len()
            ))
        }
        .map(with_causes)
        .boxed()
    }
}

struct Start;

impl Start {
    async fn converge(&self, run: &EtcdHostRun, dry_run: bool) -> Result<Changes> {
        let (restart, changed) = {
            let c = run.changes.lock().unwrap_or_else(PoisonError::into_inner);
            (c.restart.clone(), c.units_changed)
        };
        let c =
            converge::ensure_units(run.session()?, &etcdhost::UNITS, &restart, changed, dry_run)
                .await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<EtcdHostRun, EtcdHostPhase, anyhow::Error> for Start {
    fn key(&self) -> EtcdHostPhase {
        EtcdHostPhase::Start
    }
    fn title(&self) -> &'static str {
        "start the etcd member"
    }
    fn plan<'a>(&'a self, run: &'a EtcdHostRun) -> BoxFuture<'a, Result<Vec<String>>> {
        async move { Ok(would(&self.converge(run, true).await?, "etcd runs")) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, run: &'a EtcdHostRun, _: &'a Live) -> BoxFuture<'a, Result<String>> {
        async move { Ok(self.converge(run, false).await?.units_summary()) }
            .map(with_causes)
            .boxed()
    }
}

struct Healthy;

impl Phase<EtcdHostRun, EtcdHostPhase, anyhow::Error> for Healthy {
    fn key(&self) -> EtcdHostPhase {
        EtcdHostPhase::Healthy
    }
    fn title(&self) -> &'static str {
        "wait until the member serves (its peers found)"
    }
    fn plan<'a>(&'a self, _: &'a EtcdHostRun) -> BoxFuture<'a, Result<Vec<String>>> {
        async { Ok(vec!["wait for the member's health".to_string()]) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, run: &'a EtcdHostRun, _: &'a Live) -> BoxFuture<'a, Result<String>> {
        async move {
            let cmd = super::etcdctl::command(
                &run.link.ctx.manifest.kubernetes_version,
                "https://127.0.0.1:2379",
                &["endpoint", "health"],
            );
            let started = Instant::now();
            loop {
                let out = run.session()?.output(&cmd).await?;
                if out.exit_status == Some(0) {
                    return Ok(format!("healthy after {:.1}s", started.elapsed().as_secs_f64()));
                }
                if started.elapsed() > HEALTHY_TIMEOUT {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    bail!(
                        "etcd on {} is not healthy after {}s: {}; see `kubeup ssh -f FILE {} -- journalctl -u etcd` (every member listed in spec.etcd.external must run for a new etcd to form)",
                        run.link.host,
                        HEALTHY_TIMEOUT.as_secs(),
                        stderr.trim().lines().last().unwrap_or(""),
                        run.link.host
                    );
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        .map(with_causes)
        .boxed()
    }
}
