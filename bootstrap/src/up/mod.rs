//! `kubeup up` and `kubeup plan`: converge the controller over SSH, one
//! list of phases ([`phases::up_phases`]) walked for real or as a dry run.
//! A second run on a converged host uploads, writes, issues and restarts
//! nothing, and says so.

mod addons;
mod certinfo;
mod connect;
mod context;
pub mod etcdctl;
mod etcdhosts;
mod failure;
mod metrics;
mod node;
mod operator;
mod phases;
mod remove;
mod run;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use kubeup_provision::converge::Changes;
use kubeup_provision::phase::{PhaseKey, Procedure, Report};

use crate::progress::Progress;
use crate::{ClusterFile, Output};

pub use connect::{Connect, Link};
pub use context::{ControllerContext, admin_client, admin_client_at};
pub use failure::{end_with, explain};
pub use phases::UpPhase;

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub file: ClusterFile,
    /// Progress format: text (live on a terminal, lines otherwise) or json.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: Output,
    /// A controller removed from cluster.yaml that no longer answers over
    /// SSH (gone for good) leaves etcd and loses its Node through a
    /// remaining controller, without a drain or a reset. Without it, such a
    /// removal is refused.
    #[arg(long)]
    pub forget_unreachable: bool,
}

pub async fn run_up(args: UpArgs) -> Result<ExitCode> {
    let progress = Progress::new(args.output);
    let result = converge_controller(&args, &progress, false).await;
    end_with(
        &progress,
        "up",
        result.map(|done| report(&done, &progress, args.output, false)),
    )
}

pub async fn run_plan(args: UpArgs) -> Result<ExitCode> {
    let progress = Progress::new(args.output);
    let result = converge_controller(&args, &progress, true).await;
    end_with(
        &progress,
        "plan",
        result.map(|done| report(&done, &progress, args.output, true)),
    )
}

/// What a walk changed (or would change) and the phases it went through.
pub struct Converged {
    pub changes: Changes,
    pub report: Report<UpPhase>,
}

/// The whole converge, `dry_run` for `plan`, in the three stages of
/// [`phases::STAGES`]: look at every controller (names, routes), converge
/// them all at once (a new etcd's members must start together; the first
/// one applies the cluster's objects once its apiserver is ready), then
/// wait for the operator through the first one. The first failure on any
/// controller stops the run after the stage's other walks end.
pub async fn converge_controller(
    args: &UpArgs,
    progress: &Progress,
    dry_run: bool,
) -> Result<Converged> {
    let file = &args.file;
    let ctx = Arc::new(ControllerContext::load(&file.file, !dry_run)?);
    // Controllers and dedicated etcd hosts cluster.yaml no longer lists
    // leave first, one at a time, each behind its quorum gate.
    let running = remove::running_cluster(&ctx).await?;
    for (kind, leaving) in [
        (
            remove::Leaver::Controller,
            remove::removed_controllers(&ctx, running.as_ref()).await?,
        ),
        (
            remove::Leaver::EtcdHost,
            remove::removed_etcd_hosts(&ctx, running.as_ref()).await?,
        ),
    ] {
        if !leaving.is_empty() {
            remove::remove_all(
                ctx.clone(),
                kind,
                leaving,
                progress,
                dry_run,
                args.forget_unreachable,
                &file.file,
            )
            .await?;
        }
    }
    let joining = remove::added_etcd_hosts(&ctx, running.as_ref());
    let mut runs = (0..ctx.controllers().len())
        .map(|i| run::UpRun::new(ctx.clone(), i))
        .collect::<Result<Vec<_>>>()?;
    let walked = walk_stages(&ctx, &runs, &joining, progress, dry_run, &file.file).await;
    for run in &mut runs {
        run.link.close().await;
    }
    let (report, mut changes) = walked?;
    if !dry_run && let Some(first) = runs.first() {
        after_up(first, &report, progress);
    }
    // With several controllers each line names its host.
    let several = runs.len() > 1 || !ctx.etcd_hosts().is_empty();
    for run in &runs {
        let mut c = run.changes();
        if several {
            c.prefix_items(&run.link.host);
        }
        changes.merge(c);
    }
    Ok(Converged { changes, report })
}

/// The stages of every controller, with the dedicated etcd hosts (if any)
/// converged between the look and the converge: after every check on the
/// controllers, before any apiserver starts against them. Returns the
/// first controller's report and what changed on the etcd hosts.
async fn walk_stages(
    ctx: &Arc<ControllerContext>,
    runs: &[run::UpRun],
    joining_etcd: &[String],
    progress: &Progress,
    dry_run: bool,
    file: &std::path::Path,
) -> Result<(Report<UpPhase>, Changes)> {
    let command = if dry_run { "plan" } else { "up" };
    let mut report = Report { phases: vec![] };
    let mut etcd_hosts = Changes::default();
    for n in 0..phases::STAGES.len() {
        let mut first = None;
        for wave in waves(n, runs) {
            let results = futures::future::join_all(wave.iter().map(|run| async move {
                let procedure = Procedure::new(run.link.host.clone(), phases::stage(n));
                let walked = procedure.apply_or_plan(run, progress, dry_run).await;
                walked.map_err(|f| failure::explain(f, command, file, &run.link))
            }))
            .await;
            for (run, result) in wave.iter().zip(results) {
                let r = result?;
                if run.link.index == 0 {
                    first = Some(r);
                }
            }
        }
        report
            .phases
            .extend(first.map(|r| r.phases).unwrap_or_default());
        if n == 0 {
            between_look_and_converge(ctx, runs, dry_run)?;
            etcd_hosts =
                etcdhosts::converge_all(ctx, joining_etcd, progress, dry_run, file).await?;
        }
    }
    Ok((report, etcd_hosts))
}

/// Who walks stage `n`, in waves (each wave at once, waves in order):
/// every controller looks at once; the operator is waited for once,
/// through the first controller; controllers joining a running etcd
/// converge one at a time (each a learner promoted before the next is
/// added) before the running ones take the new member list (whose
/// apiservers then restart while the new ones serve); a fresh cluster's
/// controllers converge all at once.
fn waves(n: usize, runs: &[run::UpRun]) -> Vec<Vec<&run::UpRun>> {
    if n + 1 == phases::STAGES.len() {
        return vec![runs.iter().take(1).collect()];
    }
    if n == 0 {
        return vec![runs.iter().collect()];
    }
    let (joining, running): (Vec<_>, Vec<_>) = runs.iter().partition(|r| r.joins_running_etcd());
    let mut waves: Vec<Vec<&run::UpRun>> = joining.into_iter().map(|r| vec![r]).collect();
    waves.push(running);
    waves
}

/// Once every controller was looked at: each one's plan (etcd's members and
/// the load balancers' backends name them all), and the admin kubeconfigs
/// on the workstation, which every controller's later phases read.
fn between_look_and_converge(
    ctx: &ControllerContext,
    runs: &[run::UpRun],
    dry_run: bool,
) -> Result<()> {
    let observed = runs
        .iter()
        .map(|r| r.observed().cloned())
        .collect::<Result<Vec<_>>>()?;
    // A controller with etcd data is a stacked member: its cluster's data
    // would stay behind if the apiservers moved to dedicated hosts.
    if !ctx.etcd_hosts().is_empty()
        && let Some((run, _)) = runs.iter().zip(&observed).find(|(_, o)| o.etcd_data)
    {
        anyhow::bail!(
            "spec.etcd.external: the controller {} holds etcd data (a stacked member): moving etcd to dedicated hosts is not supported; nothing was changed. Remove spec.etcd, or `kubeup reset` the controller if its data is a leftover",
            run.link.host
        );
    }
    for run in runs {
        run.render_plan(&observed)?;
    }
    if !dry_run && let Some(first) = runs.first() {
        let issued = ctx.ensure_admin_credentials()?;
        first.merge(Changes {
            issued,
            ..Changes::default()
        });
        ctx.write_admin_kubeconfigs()?;
    }
    Ok(())
}

/// Where the user goes from here.
fn after_up(run: &run::UpRun, report: &Report<UpPhase>, progress: &Progress) {
    let host = &run.link.host;
    if !report.walked().contains(&UpPhase::OperatorLeading) {
        progress.info(
            host,
            "networking.cni is none: the operator starts once you install a pod network",
        );
    }
    let loaded = &run.ctx().loaded;
    progress.info(
        host,
        &format!(
            "admin kubeconfig: {} (break-glass: {})",
            loaded.admin_kubeconfig().display(),
            loaded.super_admin_kubeconfig().display()
        ),
    );
}

fn report(done: &Converged, progress: &Progress, output: Output, dry_run: bool) {
    let changes = &done.changes;
    if output == Output::Json {
        let phases: Vec<&str> = done.report.walked().iter().map(|p| p.name()).collect();
        progress.summary(serde_json::json!({
            "dryRun": dry_run, "changes": changes, "phases": phases,
        }));
        return;
    }
    if changes.is_empty() {
        println!("no changes");
        return;
    }
    let verb = if dry_run { "would" } else { "did" };
    let list = |title: &str, items: &[String]| {
        if !items.is_empty() {
            println!("{verb} {title} ({}):", items.len());
            for i in items {
                println!("  {i}");
            }
        }
    };
    list("upload", &changes.uploaded);
    list("write", &changes.written);
    list("issue", &changes.issued);
    list("start", &changes.started);
    list("restart", &changes.restarted);
    if !dry_run {
        println!("done in {:.1}s", progress.total().as_secs_f64());
    }
}
