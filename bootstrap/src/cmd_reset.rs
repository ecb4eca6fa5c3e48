//! `kubeup reset -f cluster.yaml [HOST…]`: remove everything kubeup
//! installed on the hosts, so a later `up` starts clean. Phases: connect →
//! stop units → remove files → clean network (the last three are the
//! operator's too, in `converge::reset_phases`).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use kubeup_provision::converge::reset_phases::{ResetPhase, ResetSteps};
use kubeup_provision::phase::{Phase, Procedure};

use crate::progress::Progress;
use crate::up::{Connect, ControllerContext, Link, end_with, explain};
use crate::{ClusterFile, Output};

#[derive(Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    pub file: ClusterFile,
    /// Hosts to reset (name or address); default: every controller.
    pub hosts: Vec<String>,
    /// Do not ask for confirmation (required when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(args: ResetArgs) -> Result<ExitCode> {
    let ctx = ControllerContext::load(&args.file.file, false)?;
    let c = &ctx.controller;
    if !args.hosts.is_empty()
        && !args
            .hosts
            .iter()
            .any(|h| *h == c.address || Some(h) == c.name.as_ref())
    {
        bail!(
            "{} names no host {:?}; its controller is {}",
            args.file.file.display(),
            args.hosts,
            c.address
        );
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "reset removes Kubernetes and its data from {}: pass --yes to confirm",
                c.address
            );
        }
        eprint!(
            "Remove every kubeup component and its data (etcd!) from {}? [y/N] ",
            c.address
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing changed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let progress = Progress::new(Output::Text);
    let mut link = Link::new(ctx);
    let connect = Connect(ResetPhase::Connect);
    let steps = ResetSteps::default();
    let mut phases: Vec<&dyn Phase<Link, ResetPhase, anyhow::Error>> = vec![&connect];
    phases.extend(steps.phases());
    let walked = Procedure::new(link.host.clone(), phases)
        .apply(&link, &progress, None)
        .await;
    link.close().await;
    let result = match walked {
        Ok(_) => {
            let removed = steps.remove.removed().len();
            println!("{}: reset, {removed} paths removed", link.host);
            Ok(())
        }
        Err(failed) => Err(explain(failed, "reset", &args.file.file, &link)),
    };
    end_with(&progress, "reset", result)
}
