//! `kubeup up` and `kubeup plan`: converge the controller over SSH.
//!
//! Phases, each looking before it acts: connect → preflight → artifacts →
//! certificates → configuration → units → control plane ready → node ready
//! → cluster add-ons → admin kubeconfig. A second run on a converged host
//! uploads, writes, issues and restarts nothing, and says so.

mod addons;
mod certinfo;
mod context;
mod metrics;
mod node;
mod operator;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use kubeup_provision::converge::{self, Changes, Role};
use kubeup_provision::hostplan::{Unit, layout, network};

use crate::progress::Progress;
use crate::{ClusterFile, Output};

pub use context::{ControllerContext, admin_client};

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub file: ClusterFile,
    /// Progress format: text (live on a terminal, lines otherwise) or json.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: Output,
}

/// Everything but the kubelet, in start order.
const CONTROL_PLANE: [Unit; 6] = [
    Unit::Containerd,
    Unit::Etcd,
    Unit::KubeApiserver,
    Unit::KubeControllerManager,
    Unit::KubeScheduler,
    Unit::KubeProxy,
];

/// Certificates with fewer days left are re-issued by `up`.
const RENEW_DAYS: i64 = 30;

pub async fn run_up(args: UpArgs) -> Result<ExitCode> {
    let progress = Progress::new(args.output);
    let changes = converge_controller(&args.file, &progress, false).await?;
    report(&changes, &progress, args.output, false);
    Ok(ExitCode::SUCCESS)
}

pub async fn run_plan(args: UpArgs) -> Result<ExitCode> {
    let progress = Progress::new(args.output);
    let changes = converge_controller(&args.file, &progress, true).await?;
    report(&changes, &progress, args.output, true);
    Ok(ExitCode::SUCCESS)
}

fn report(changes: &Changes, progress: &Progress, output: Output, dry_run: bool) {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({"event": "summary", "dryRun": dry_run, "changes": changes})
        );
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

/// The whole converge of the (single) controller.
pub async fn converge_controller(
    file: &ClusterFile,
    progress: &Progress,
    dry_run: bool,
) -> Result<Changes> {
    let ctx = ControllerContext::load(&file.file, !dry_run)?;
    let host = ctx.host_label();

    let phase = progress.phase(&host, "connect");
    let session = match ctx.connect().await {
        Ok(s) => {
            phase.done(&s.host_key_fingerprint().await.unwrap_or_default());
            s
        }
        Err(e) => {
            phase.fail(&format!("{e:#}"));
            return Err(e);
        }
    };

    let phase = progress.phase(&host, "preflight");
    let report = converge::preflight(&session, Role::Controller).await?;
    if let Some(text) = report.error_text() {
        phase.fail("host is not ready");
        anyhow::bail!("preflight failed on {host}; nothing was changed:\n{text}");
    }
    let warnings: Vec<String> = report
        .warnings()
        .iter()
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect();
    phase.done(&warnings.join("; "));
    let mut plan = ctx.plan(&report.hostname)?;
    let net = &ctx.loaded.cluster.spec.networking;
    plan.files.extend(network::files_for(
        net.cni,
        &network::FlannelNode {
            node_name: &plan.node_name,
            address: &ctx.controller.address,
            kubernetes_version: &ctx.manifest.kubernetes_version,
            cluster_pod_cidr: &net.pod_cidr,
            api_server: &ctx.api_server(),
            credential: network::FlannelCredential::ClientCertificate,
        },
    ));
    // flanneld's own client certificate (never the kubelet's identity).
    plan.certs.extend(network::controller_certs(
        net.cni,
        ctx.loaded.cluster.spec.certificates.leaf_days,
    ));

    let mut changes = Changes::default();
    changes.issued.extend(ctx.created_cas.iter().cloned());
    let phase = progress.phase(&host, "artifacts");
    // What goes compressed is kept there for the operator's later uploads.
    node::operator_dirs(&session, dry_run).await?;
    let c = converge::push_bundle(
        &session,
        &ctx.bundle_dir,
        &ctx.manifest,
        Some(&ctx.compressed),
        Some(layout::TRANSFER_CACHE),
        dry_run,
    )
    .await?;
    phase.done(&format!("{} to upload", c.uploaded.len()));
    changes.merge(c);

    let phase = progress.phase(&host, "certificates");
    let c = converge::ensure_certs(&session, &plan.certs, &ctx.cas, RENEW_DAYS, dry_run).await?;
    phase.done(&format!("{} issued", c.issued.len()));
    changes.merge(c);

    let phase = progress.phase(&host, "configuration");
    let c = converge::write_files(&session, &plan.files, dry_run).await?;
    phase.done(&format!("{} written", c.written.len()));
    changes.merge(c);
    let mut installed: Vec<String> = plan.files.iter().map(|f| f.path.clone()).collect();
    installed.extend(
        plan.certs
            .iter()
            .flat_map(|c| [c.cert_path.clone(), c.key_path.clone()]),
    );
    installed.push(kubeup_provision::hostplan::layout::CNI_CONFLIST.into());
    converge::record_installed(&session, &installed, dry_run).await?;

    let phase = progress.phase(&host, "units");
    node::apply_sysctls(&session, dry_run).await?;
    let restart = changes.restart.clone();
    // The kubelet starts last, once its Node has a podCIDR and the CNI
    // config is there: it then goes Ready at once instead of waiting out
    // its network-status poll (see node::ensure_node).
    let units: &[Unit] = if dry_run {
        &Unit::CONTROLLER
    } else {
        &CONTROL_PLANE
    };
    let c =
        converge::ensure_units(&session, units, &restart, changes.units_changed, dry_run).await?;
    phase.done(&describe_units(&c));
    changes.merge(c);
    if dry_run {
        // The rest talks to the cluster; a plan stops at the host.
        return Ok(changes);
    }

    let phase = progress.phase(&host, "images");
    let imported = converge::import_images(&session, &ctx.manifest, false).await?;
    phase.done(&if imported.is_empty() {
        "present".to_string()
    } else {
        imported.join(", ")
    });
    changes
        .uploaded
        .extend(imported.into_iter().map(|i| format!("image {i}")));

    let phase = progress.phase(&host, "control plane ready");
    changes.issued.extend(ctx.ensure_admin_credentials()?);
    ctx.write_admin_kubeconfigs()?;
    // `up` installs and repairs the cluster with the break-glass credential,
    // as kubeadm does: the everyday admin's group has no rights until the
    // `kubeup:cluster-admins` binding (applied below) exists.
    let client = admin_client(&ctx.loaded.super_admin_kubeconfig()).await?;
    if let Err(e) = node::wait_ready(&client, &session).await {
        phase.fail("not ready");
        return Err(e);
    }
    phase.done("");

    let phase = progress.phase(&host, "node ready");
    let c = node::ensure_node(
        &client,
        &session,
        &plan.node_name,
        &ctx.loaded.cluster.spec.networking.pod_cidr,
        ctx.loaded.cluster.spec.networking.cni,
        &restart,
    )
    .await?;
    changes.merge(c);
    phase.done(&plan.node_name);

    let phase = progress.phase(&host, "cluster add-ons");
    let applied = addons::apply(&client, &ctx)
        .await
        .context("failed to apply the cluster add-ons")?;
    certinfo::publish(&client, &session, &plan.certs, &ctx.cas).await?;
    phase.done(&format!("{} objects", applied + 1));

    // Done means a WorkerJoin applied now is picked up at once. With
    // `cni: none` no pod is scheduled (the Node stays NotReady) until the
    // user installs a pod network, as with kubeadm: nothing to wait for.
    if kubeup_provision::hostplan::network::runs_flannel(ctx.loaded.cluster.spec.networking.cni) {
        let phase = progress.phase(&host, "operator leading");
        match operator::wait_leading(&client).await {
            Ok(pod) => phase.done(&pod),
            Err(e) => {
                phase.fail("no operator leads");
                return Err(e);
            }
        }
    } else {
        progress.info(
            &host,
            "networking.cni is none: the operator starts once you install a pod network",
        );
    }

    progress.info(
        &host,
        &format!(
            "admin kubeconfig: {} (break-glass: {})",
            ctx.loaded.admin_kubeconfig().display(),
            ctx.loaded.super_admin_kubeconfig().display()
        ),
    );
    session.close().await;
    Ok(changes)
}

fn describe_units(c: &Changes) -> String {
    let mut parts = vec![];
    if !c.started.is_empty() {
        parts.push(format!("started {}", c.started.join(", ")));
    }
    if !c.restarted.is_empty() {
        parts.push(format!("restarted {}", c.restarted.join(", ")));
    }
    if parts.is_empty() {
        "all running".into()
    } else {
        parts.join("; ")
    }
}
