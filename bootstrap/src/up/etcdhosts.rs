//! Dedicated etcd hosts (`spec.etcd.external`): `up` brings their members
//! up before any controller, so the apiservers start against a healthy
//! etcd. Like the controllers, in two stages: every host is looked at
//! (its member name, whether it has data), then all converge at once (a new
//! etcd's members start together) and each waits until its member is
//! healthy. A host the running cluster does not have yet joins its etcd
//! as a learner, one at a time: added (`etcd join`) before its etcd first
//! starts, promoted (`etcd promote`) once it has caught up, like a stacked
//! controller. (Hosts cluster.yaml no longer lists left before this, in
//! [`super::remove`].)

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
    Join,
    Start,
    Promote,
    Healthy,
}

impl PhaseKey for EtcdHostPhase {
    fn name(self) -> &'static str {
        match self {
            EtcdHostPhase::Connect => "connect",
            EtcdHostPhase::Preflight => "preflight",
            EtcdHostPhase::Install => "etcd install",
            EtcdHostPhase::Join => "etcd join",
            EtcdHostPhase::Start => "etcd start",
            EtcdHostPhase::Promote => "etcd promote",
            EtcdHostPhase::Healthy => "etcd healthy",
        }
    }
}

/// How long a new member may take to find its peers.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(90);

type Step = dyn Phase<EtcdHostRun, EtcdHostPhase, anyhow::Error>;

/// Look at every host.
fn look() -> Vec<&'static Step> {
    vec![&Connect(EtcdHostPhase::Connect), &Preflight]
}

/// Converge a member of the etcd that runs (or of a new one).
fn converge() -> Vec<&'static Step> {
    vec![&Install, &Start, &Healthy]
}

/// Converge a host that joins the running etcd: a learner first.
fn join() -> Vec<&'static Step> {
    vec![&Install, &Join, &Start, &Promote, &Healthy]
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
    /// Set when this host joins the running etcd: the client URLs of the
    /// members that run, for etcdctl.
    joins_via: OnceLock<String>,
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

    /// The running members' client URLs, for a host that joins them.
    fn running_members(&self) -> Result<&str> {
        self.joins_via
            .get()
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{} does not join a running etcd", self.link.host))
    }

    fn peer_url(&self) -> String {
        super::etcdctl::peer_url(&self.link.controller.address)
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

/// Converge every dedicated etcd host (`dry_run`: say what would change);
/// those at the addresses in `joining` join the running etcd. Returns what
/// changed, each line naming its host.
pub async fn converge_all(
    ctx: &Arc<ControllerContext>,
    joining: &[String],
    progress: &Progress,
    dry_run: bool,
    file: &std::path::Path,
) -> Result<Changes> {
    let mut runs: Vec<EtcdHostRun> = ctx
        .etcd_hosts()
        .iter()
        .map(|h| EtcdHostRun {
            link: Link::for_host(ctx.clone(), h.clone()),
            joins_via: OnceLock::new(),
            found: OnceLock::new(),
            plan: OnceLock::new(),
            changes: Mutex::new(Changes::default()),
        })
        .collect();
    let walked = walk(ctx, &runs, joining, progress, dry_run, file).await;
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

/// Look at every host at once; then the members of the running etcd (or
/// of a new one) converge at once, and after them each joining host, one
/// at a time.
async fn walk(
    ctx: &ControllerContext,
    runs: &[EtcdHostRun],
    joining: &[String],
    progress: &Progress,
    dry_run: bool,
    file: &std::path::Path,
) -> Result<()> {
    let all: Vec<&EtcdHostRun> = runs.iter().collect();
    walk_wave(&all, look(), progress, dry_run, file).await?;
    render_plans(ctx, runs, joining)?;
    let (joins, members): (Vec<&EtcdHostRun>, Vec<&EtcdHostRun>) =
        runs.iter().partition(|r| r.joins_via.get().is_some());
    walk_wave(&members, converge(), progress, dry_run, file).await?;
    for run in joins {
        walk_wave(&[run], join(), progress, dry_run, file).await?;
    }
    Ok(())
}

/// `phases` on every host of `runs` at once.
async fn walk_wave(
    runs: &[&EtcdHostRun],
    phases: Vec<&'static Step>,
    progress: &Progress,
    dry_run: bool,
    file: &std::path::Path,
) -> Result<()> {
    let command = if dry_run { "plan" } else { "up" };
    let results = futures::future::join_all(runs.iter().map(|run| {
        let procedure = Procedure::new(run.link.host.clone(), phases.clone());
        async move {
            let walked = procedure.apply_or_plan(*run, progress, dry_run).await;
            walked.map_err(|f| super::explain(f, command, file, &run.link))
        }
    }))
    .await;
    results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(())
}

/// Every host was looked at: each member's plan. A member of the running
/// etcd (or of a new one) names all members; a joining host names the
/// members that run when it starts (those before it and itself), as etcd
/// checks on a member that joins.
fn render_plans(ctx: &ControllerContext, runs: &[EtcdHostRun], joining: &[String]) -> Result<()> {
    let found = runs
        .iter()
        .map(|r| {
            r.found
                .get()
                .cloned()
                .ok_or_else(|| anyhow!("{}: preflight found nothing", r.link.host))
        })
        .collect::<Result<Vec<_>>>()?;
    let joins = |r: &EtcdHostRun| joining.contains(&r.link.controller.address);
    check_data(runs, &found, &joins)?;
    let member =
        |(f, r): (&Found, &EtcdHostRun)| (f.name.clone(), r.link.controller.address.clone());
    let running: Vec<(String, String)> = found
        .iter()
        .zip(runs)
        .filter(|(_, r)| !joins(r))
        .map(member)
        .collect();
    let all: Vec<(String, String)> = found.iter().zip(runs).map(member).collect();
    let endpoints = running
        .iter()
        .map(|(_, a)| super::etcdctl::client_url(a))
        .collect::<Vec<_>>()
        .join(",");
    let ca = std::fs::read(ctx.loaded.pki_dir().join("etcd/ca.crt"))
        .context("failed to read the etcd CA's certificate")?;
    let days = ctx.loaded.cluster.spec.certificates.leaf_days;
    let mut joined_before = running.clone();
    for (run, f) in runs.iter().zip(&found) {
        let me = (f.name.clone(), run.link.controller.address.clone());
        let members = if joins(run) {
            let _ = run.joins_via.set(endpoints.clone());
            joined_before.push(me.clone());
            joined_before.clone()
        } else {
            all.clone()
        };
        let member = EtcdMember {
            name: me.0,
            address: me.1,
            kubernetes_version: ctx.manifest.kubernetes_version.clone(),
            cluster_name: ctx.loaded.name().to_string(),
            members,
            joins_existing: joins(run),
        };
        let mut files = etcdhost::files(&member, &ca);
        // A member with data read its first-start settings long ago: they
        // are left as they are (rewriting them would change nothing).
        if f.has_data {
            files.retain(|h| h.path != layout::ETCD_BOOTSTRAP_ENV);
        }
        let _ = run.plan.set((files, etcdhost::certs(&member, days)));
    }
    Ok(())
}

/// A new etcd starts with all its members at once; a running one takes new
/// members only as learners. So: a host the running cluster has must hold
/// data once any does (else it would start a second, empty etcd), and a
/// joining host must hold none (else it is another etcd's member). Refused
/// before anything changes.
fn check_data(
    runs: &[EtcdHostRun],
    found: &[Found],
    joins: &dyn Fn(&EtcdHostRun) -> bool,
) -> Result<()> {
    let hosts = |want_data: bool, joining: bool| -> Vec<&str> {
        runs.iter()
            .zip(found)
            .filter(|(r, f)| f.has_data == want_data && joins(r) == joining)
            .map(|(r, _)| r.link.host.as_str())
            .collect()
    };
    let (with_data, without) = (hosts(true, false), hosts(false, false));
    if !with_data.is_empty() && !without.is_empty() {
        bail!(
            "spec.etcd.external: {} run(s) etcd with data and {} would be new, yet the running cluster lists them all (or no cluster answers); nothing was changed. `kubeup reset` the new host(s) if they are leftovers, or run up once the cluster answers (a new host then joins as a learner)",
            with_data.join(", "),
            without.join(", ")
        );
    }
    let leftovers = hosts(true, true);
    if !leftovers.is_empty() {
        bail!(
            "spec.etcd.external: {} would join the running etcd but hold(s) etcd data of another; nothing was changed. `kubeup reset` it first",
            leftovers.join(", ")
        );
    }
    let joining = hosts(false, true);
    if !joining.is_empty() && with_data.is_empty() {
        bail!(
            "spec.etcd.external: {} would join the running etcd, but no host the cluster lists holds etcd data; nothing was changed",
            joining.join(", ")
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
        // Not rewritten on a member with data, still kubeup's to remove.
        if !installed.iter().any(|p| p == layout::ETCD_BOOTSTRAP_ENV) {
            installed.push(layout::ETCD_BOOTSTRAP_ENV.to_string());
        }
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
                super::etcdctl::LOCAL,
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

struct Join;

impl Phase<EtcdHostRun, EtcdHostPhase, anyhow::Error> for Join {
    fn key(&self) -> EtcdHostPhase {
        EtcdHostPhase::Join
    }
    fn title(&self) -> &'static str {
        "add this host to the running etcd as a learner"
    }
    fn plan<'a>(&'a self, run: &'a EtcdHostRun) -> BoxFuture<'a, Result<Vec<String>>> {
        async move {
            let name = &run.found.get().context("not looked at")?.name;
            Ok(vec![format!(
                "add etcd member {name} ({}) as a learner of {}",
                run.peer_url(),
                run.running_members()?
            )])
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a EtcdHostRun, _: &'a Live) -> BoxFuture<'a, Result<String>> {
        async move {
            let name = &run.found.get().context("not looked at")?.name;
            super::etcdctl::add_learner(
                run.session()?,
                &run.link.ctx.manifest.kubernetes_version,
                run.running_members()?,
                name,
                &run.peer_url(),
            )
            .await
        }
        .map(with_causes)
        .boxed()
    }
}

struct Promote;

impl Phase<EtcdHostRun, EtcdHostPhase, anyhow::Error> for Promote {
    fn key(&self) -> EtcdHostPhase {
        EtcdHostPhase::Promote
    }
    fn title(&self) -> &'static str {
        "promote the learner to a voting member once it caught up"
    }
    fn plan<'a>(&'a self, run: &'a EtcdHostRun) -> BoxFuture<'a, Result<Vec<String>>> {
        let line = format!(
            "wait until the learner at {} caught up with the leader, then promote it",
            run.peer_url()
        );
        async move { Ok(vec![line]) }.map(with_causes).boxed()
    }
    fn run<'a>(&'a self, run: &'a EtcdHostRun, _: &'a Live) -> BoxFuture<'a, Result<String>> {
        async move {
            super::etcdctl::promote_when_caught_up(
                run.session()?,
                &run.link.ctx.manifest.kubernetes_version,
                run.running_members()?,
                &run.peer_url(),
            )
            .await
        }
        .map(with_causes)
        .boxed()
    }
}
