//! `kubeup reset -f cluster.yaml [HOST…]`: remove everything kubeup
//! installed on the hosts, so a later `up` starts clean. Phases: connect →
//! stop units → remove files → clean network (the last three are the
//! operator's too, in `converge::reset_phases`).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use kubeup_crds::cluster::ControllerHost;
use kubeup_provision::converge::reset_phases::{ResetPhase, ResetSteps};
use kubeup_provision::phase::{Phase, Procedure};

use crate::progress::Progress;
use crate::up::{Connect, ControllerContext, Link, end_with, explain};
use crate::{ClusterFile, Output};

#[derive(Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    pub file: ClusterFile,
    /// Hosts to reset (name or address); default: every controller and
    /// etcd host.
    pub hosts: Vec<String>,
    /// Do not ask for confirmation (required when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(args: ResetArgs) -> Result<ExitCode> {
    let ctx = Arc::new(ControllerContext::load(&args.file.file, false)?);
    // Every machine kubeup manages over SSH: controllers, etcd hosts.
    let all: Vec<ControllerHost> = ctx
        .controllers()
        .iter()
        .chain(ctx.etcd_hosts())
        .cloned()
        .collect();
    let chosen: Vec<ControllerHost> = all
        .iter()
        .filter(|c| {
            args.hosts.is_empty()
                || args
                    .hosts
                    .iter()
                    .any(|h| *h == c.address || Some(h) == c.name.as_ref())
        })
        .cloned()
        .collect();
    if chosen.is_empty() {
        let addresses: Vec<&str> = all.iter().map(|c| c.address.as_str()).collect();
        bail!(
            "{} names no host {:?}; its controllers and etcd hosts are {}",
            args.file.file.display(),
            args.hosts,
            addresses.join(", ")
        );
    }
    let targets: Vec<&str> = chosen.iter().map(|c| c.address.as_str()).collect();
    let targets = targets.join(", ");
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("reset removes Kubernetes and its data from {targets}: pass --yes to confirm");
        }
        eprint!("Remove every kubeup component and its data (etcd!) from {targets}? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing changed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let progress = Progress::new(Output::Text);
    let file = &args.file.file;
    // Every chosen host at once: each is reset on its own.
    let results = futures::future::join_all(
        chosen
            .into_iter()
            .map(|host| reset_one(ctx.clone(), host, &progress, file)),
    )
    .await;
    let result = results.into_iter().collect::<Result<Vec<()>>>().map(|_| ());
    end_with(&progress, "reset", result)
}

async fn reset_one(
    ctx: Arc<ControllerContext>,
    host: ControllerHost,
    progress: &Progress,
    file: &std::path::Path,
) -> Result<()> {
    let mut link = Link::for_host(ctx, host);
    let connect = Connect(ResetPhase::Connect);
    let steps = ResetSteps::default();
    let mut phases: Vec<&dyn Phase<Link, ResetPhase, anyhow::Error>> = vec![&connect];
    phases.extend(steps.phases());
    let walked = Procedure::new(link.host.clone(), phases)
        .apply(&link, progress, None)
        .await;
    link.close().await;
    match walked {
        Ok(_) => {
            let removed = steps.remove.removed().len();
            println!("{}: reset, {removed} paths removed", link.host);
            Ok(())
        }
        Err(failed) => Err(explain(failed, "reset", file, &link)),
    }
}
