//! `kubeup reset -f cluster.yaml [HOST…]`: remove everything kubeup
//! installed on the hosts, so a later `up` starts clean.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use kubeup_provision::converge;

use crate::ClusterFile;
use crate::up::ControllerContext;

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
    let session = ctx.connect().await?;
    let removed = converge::reset_host(&session).await?;
    println!(
        "{}: reset, {} paths removed",
        ctx.host_label(),
        removed.len()
    );
    session.close().await;
    Ok(ExitCode::SUCCESS)
}
