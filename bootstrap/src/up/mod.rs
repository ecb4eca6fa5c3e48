//! `kubeup up` and `kubeup plan`: converge the controller over SSH, one
//! list of phases ([`phases::up_phases`]) walked for real or as a dry run.
//! A second run on a converged host uploads, writes, issues and restarts
//! nothing, and says so.

mod addons;
mod certinfo;
mod connect;
mod context;
mod failure;
mod metrics;
mod node;
mod operator;
mod phases;
mod run;

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use kubeup_provision::converge::Changes;
use kubeup_provision::phase::{PhaseKey, Procedure, Report};

use crate::progress::Progress;
use crate::{ClusterFile, Output};

pub use connect::{Connect, Link};
pub use context::{ControllerContext, admin_client};
pub use failure::{end_with, explain};
pub use phases::UpPhase;

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub file: ClusterFile,
    /// Progress format: text (live on a terminal, lines otherwise) or json.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: Output,
}

pub async fn run_up(args: UpArgs) -> Result<ExitCode> {
    let progress = Progress::new(args.output);
    let result = converge_controller(&args.file, &progress, false).await;
    end_with(
        &progress,
        "up",
        result.map(|done| report(&done, &progress, args.output, false)),
    )
}

pub async fn run_plan(args: UpArgs) -> Result<ExitCode> {
    let progress = Progress::new(args.output);
    let result = converge_controller(&args.file, &progress, true).await;
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

/// The whole converge of the (single) controller: `dry_run` for `plan`.
pub async fn converge_controller(
    file: &ClusterFile,
    progress: &Progress,
    dry_run: bool,
) -> Result<Converged> {
    let ctx = ControllerContext::load(&file.file, !dry_run)?;
    let mut run = run::UpRun::new(ctx);
    let procedure = Procedure::new(run.link.host.clone(), phases::up_phases());
    let walked = if dry_run {
        procedure.dry_run(&run, progress).await
    } else {
        procedure.apply(&run, progress, None).await
    };
    run.link.close().await;
    let command = if dry_run { "plan" } else { "up" };
    let report = walked.map_err(|f| failure::explain(f, command, &file.file, &run.link))?;
    if !dry_run {
        after_up(&run, &report, progress);
    }
    Ok(Converged {
        changes: run.changes(),
        report,
    })
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
