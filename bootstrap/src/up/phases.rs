//! The phases of `kubeup up` and `kubeup plan`: one list ([`up_phases`]),
//! walked by the engine for real (`up`) or as a dry run (`plan`, which
//! prints each phase's [`Phase::plan`] and changes nothing). Each phase
//! looks before it acts, so a converged host sees no write and no restart.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail};
use futures::FutureExt;
use futures::future::BoxFuture;
use kubeup_provision::converge::{self, Changes, Role};
use kubeup_provision::hostplan::{Unit, network};
use kubeup_provision::phase::{Effect, Live, Phase, PhaseKey};

use super::connect::{Connect, with_causes};
use super::run::UpRun;
use super::{addons, certinfo, node, operator};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpPhase {
    Connect,
    Preflight,
    Artifacts,
    Certificates,
    Configuration,
    Units,
    Images,
    ControlPlaneReady,
    NodeReady,
    AddOns,
    OperatorLeading,
}

/// The names JSON progress, `hack/bench-up.sh` and the README show.
impl PhaseKey for UpPhase {
    fn name(self) -> &'static str {
        match self {
            UpPhase::Connect => "connect",
            UpPhase::Preflight => "preflight",
            UpPhase::Artifacts => "artifacts",
            UpPhase::Certificates => "certificates",
            UpPhase::Configuration => "configuration",
            UpPhase::Units => "units",
            UpPhase::Images => "images",
            UpPhase::ControlPlaneReady => "control plane ready",
            UpPhase::NodeReady => "node ready",
            UpPhase::AddOns => "cluster add-ons",
            UpPhase::OperatorLeading => "operator leading",
        }
    }
}

pub type UpStep = dyn Phase<UpRun, UpPhase, anyhow::Error>;

/// `up`, in order. A phase starts once the ones its `after` names are done
/// (by default the one before): the bundle streams while certificates are
/// issued and files written, and images are imported while the apiserver
/// comes up.
pub fn up_phases() -> Vec<&'static UpStep> {
    vec![
        &Connect(UpPhase::Connect), //    looks
        &Preflight,                 //    looks; renders the plan
        &Artifacts,                 // ┐
        &Certificates,              // ├ after preflight, at once
        &Configuration,             // ┘
        &Units,                     //    after the three
        &Images,                    // ┐  after units, at once
        &ControlPlaneReady,         // ┘
        &NodeReady,                 //    after both
        &AddOns,                    //    after node ready (DNS moves after kubelets)
        &OperatorLeading,           //    only with a pod network kubeup runs
    ]
}

/// Everything but the kubelet, in start order: the kubelet starts with its
/// Node (see [`node::ensure_node`]).
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

type Plan<'a> = BoxFuture<'a, Result<Vec<String>>>;
type Run<'a> = BoxFuture<'a, Result<String>>;

struct Preflight;

impl Phase<UpRun, UpPhase, anyhow::Error> for Preflight {
    fn key(&self) -> UpPhase {
        UpPhase::Preflight
    }
    fn title(&self) -> &'static str {
        "check the host can be a controller"
    }
    fn effect(&self) -> Effect {
        Effect::Observe
    }
    fn plan<'a>(&'a self, _: &'a UpRun) -> Plan<'a> {
        async { Ok(vec!["check the host".to_string()]) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let report = converge::preflight(run.session()?, Role::Controller).await?;
            if let Some(text) = report.error_text() {
                bail!("the host is not ready; nothing was changed:\n{text}");
            }
            run.render_plan(&report.hostname)?;
            let warnings: Vec<String> = report
                .warnings()
                .iter()
                .map(|c| format!("{}: {}", c.name, c.message))
                .collect();
            Ok(warnings.join("; "))
        }
        .map(with_causes)
        .boxed()
    }
}

struct Artifacts;

impl Artifacts {
    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Changes> {
        let ctx = run.ctx();
        // What goes compressed is kept there for the operator's later uploads.
        node::operator_dirs(run.session()?, dry_run).await?;
        let c = converge::push_bundle(
            run.session()?,
            &ctx.bundle_dir,
            &ctx.manifest,
            Some(&ctx.compressed),
            Some(kubeup_provision::hostplan::layout::TRANSFER_CACHE),
            dry_run,
        )
        .await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Artifacts {
    fn key(&self) -> UpPhase {
        UpPhase::Artifacts
    }
    fn title(&self) -> &'static str {
        "upload the bundle's binaries and images"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Preflight])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            Ok(would(
                &self.converge(run, true).await?,
                "the bundle is in place",
            ))
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let c = self.converge(run, false).await?;
            Ok(format!("{} to upload", c.uploaded.len()))
        }
        .map(with_causes)
        .boxed()
    }
}

struct Certificates;

impl Certificates {
    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Changes> {
        let plan = run.plan()?;
        let cas = &run.ctx().cas;
        let c =
            converge::ensure_certs(run.session()?, &plan.certs, cas, RENEW_DAYS, dry_run).await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Certificates {
    fn key(&self) -> UpPhase {
        UpPhase::Certificates
    }
    fn title(&self) -> &'static str {
        "issue the controller's certificates"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Preflight])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            Ok(would(
                &self.converge(run, true).await?,
                "certificates are valid",
            ))
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let c = self.converge(run, false).await?;
            Ok(format!("{} issued", c.issued.len()))
        }
        .map(with_causes)
        .boxed()
    }
}

struct Configuration;

impl Configuration {
    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Changes> {
        let session = run.session()?;
        let c = converge::write_files(session, &run.plan()?.files, dry_run).await?;
        // The list names the certificates' paths too: reset removes what
        // is listed, whichever phase wrote it.
        converge::record_installed(session, &run.installed_paths()?, dry_run).await?;
        run.merge(c.clone());
        Ok(c)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Configuration {
    fn key(&self) -> UpPhase {
        UpPhase::Configuration
    }
    fn title(&self) -> &'static str {
        "write the configuration and unit files"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Preflight])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move { Ok(would(&self.converge(run, true).await?, "files are current")) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let c = self.converge(run, false).await?;
            Ok(format!("{} written", c.written.len()))
        }
        .map(with_causes)
        .boxed()
    }
}

struct Units;

impl Phase<UpRun, UpPhase, anyhow::Error> for Units {
    fn key(&self) -> UpPhase {
        UpPhase::Units
    }
    fn title(&self) -> &'static str {
        "start the control plane"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[
            UpPhase::Artifacts,
            UpPhase::Certificates,
            UpPhase::Configuration,
        ])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            let (restart, changed) = run.restart();
            // The plan names the kubelet too: up starts it with its Node.
            let c =
                converge::ensure_units(run.session()?, &Unit::CONTROLLER, &restart, changed, true)
                    .await?;
            run.merge(c.clone());
            Ok(would(&c, "all running"))
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let session = run.session()?;
            node::apply_sysctls(session, false).await?;
            let (restart, changed) = run.restart();
            let c =
                converge::ensure_units(session, &CONTROL_PLANE, &restart, changed, false).await?;
            let detail = describe_units(&c);
            run.merge(c);
            Ok(detail)
        }
        .map(with_causes)
        .boxed()
    }
}

struct Images;

impl Images {
    async fn converge(&self, run: &UpRun, dry_run: bool) -> Result<Vec<String>> {
        let imported =
            converge::import_images(run.session()?, &run.ctx().manifest, dry_run).await?;
        run.merge(Changes {
            uploaded: imported.iter().map(|i| format!("image {i}")).collect(),
            ..Changes::default()
        });
        Ok(imported)
    }
}

impl Phase<UpRun, UpPhase, anyhow::Error> for Images {
    fn key(&self) -> UpPhase {
        UpPhase::Images
    }
    fn title(&self) -> &'static str {
        "import the images into containerd"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Units])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        async move {
            let imported = self.converge(run, true).await?;
            Ok(if imported.is_empty() {
                vec!["images are present".to_string()]
            } else {
                vec![format!("import {}", imported.join(", "))]
            })
        }
        .map(with_causes)
        .boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let imported = self.converge(run, false).await?;
            Ok(if imported.is_empty() {
                "present".to_string()
            } else {
                imported.join(", ")
            })
        }
        .map(with_causes)
        .boxed()
    }
}

struct ControlPlaneReady;

impl Phase<UpRun, UpPhase, anyhow::Error> for ControlPlaneReady {
    fn key(&self) -> UpPhase {
        UpPhase::ControlPlaneReady
    }
    fn title(&self) -> &'static str {
        "wait for the apiserver's /readyz"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Units])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        let ctx = run.ctx();
        let lines = vec![
            format!(
                "write {} and {}",
                ctx.loaded.admin_kubeconfig().display(),
                ctx.loaded.super_admin_kubeconfig().display()
            ),
            format!("wait for {}/readyz", ctx.api_server()),
        ];
        async move { Ok(lines) }.map(with_causes).boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let ctx = run.ctx();
            let issued = ctx.ensure_admin_credentials()?;
            run.merge(Changes {
                issued,
                ..Changes::default()
            });
            ctx.write_admin_kubeconfigs()?;
            // `up` installs and repairs the cluster with the break-glass
            // credential, as kubeadm does: the everyday admin's group has no
            // rights until the `kubeup:cluster-admins` binding (applied with
            // the add-ons) exists.
            let client = super::admin_client(&ctx.loaded.super_admin_kubeconfig()).await?;
            node::wait_ready(&client, run.session()?).await?;
            run.set_client(client);
            Ok(String::new())
        }
        .map(with_causes)
        .boxed()
    }
}

struct NodeReady;

impl Phase<UpRun, UpPhase, anyhow::Error> for NodeReady {
    fn key(&self) -> UpPhase {
        UpPhase::NodeReady
    }
    fn title(&self) -> &'static str {
        "register the Node, start the kubelet, wait for Ready"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Images, UpPhase::ControlPlaneReady])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        let line = run.plan().map(|p| {
            format!(
                "create Node {} if missing, start the kubelet (restart it when its inputs changed), wait for Ready",
                p.node_name
            )
        });
        async move { Ok(vec![line?]) }.map(with_causes).boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let net = &run.ctx().loaded.cluster.spec.networking;
            let name = &run.plan()?.node_name;
            let (restart, _): (BTreeSet<Unit>, bool) = run.restart();
            let c = node::ensure_node(
                run.client()?,
                run.session()?,
                name,
                &net.pod_cidr,
                net.cni,
                &restart,
            )
            .await?;
            run.merge(c);
            Ok(name.clone())
        }
        .map(with_causes)
        .boxed()
    }
}

struct AddOns;

impl Phase<UpRun, UpPhase, anyhow::Error> for AddOns {
    fn key(&self) -> UpPhase {
        UpPhase::AddOns
    }
    fn title(&self) -> &'static str {
        "apply the CRDs, RBAC, the Cluster, the operator and the add-ons"
    }
    fn plan<'a>(&'a self, _: &'a UpRun) -> Plan<'a> {
        let lines = vec![
            "apply the CRDs, bootstrap RBAC, the Cluster object, the operator, the pod network and DNS add-ons (server-side, unchanged objects stay as they are)".to_string(),
            format!("publish the controller's certificates in ConfigMap {}/{}", certinfo::NAMESPACE, certinfo::CONFIGMAP),
        ];
        async move { Ok(lines) }.map(with_causes).boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let client = run.client()?;
            let applied = addons::apply(client, run.ctx())
                .await
                .context("failed to apply the cluster add-ons")?;
            let plan = run.plan()?;
            certinfo::publish(client, run.session()?, &plan.certs, &run.ctx().cas).await?;
            Ok(format!("{} objects", applied + 1))
        }
        .map(with_causes)
        .boxed()
    }
}

/// Done means a WorkerJoin applied now is picked up at once.
struct OperatorLeading;

impl Phase<UpRun, UpPhase, anyhow::Error> for OperatorLeading {
    fn key(&self) -> UpPhase {
        UpPhase::OperatorLeading
    }
    fn title(&self) -> &'static str {
        "wait until the operator runs and leads"
    }
    /// With `cni: none` no pod is scheduled (the Node stays NotReady) until
    /// the user installs a pod network, as with kubeadm: nothing to wait for.
    fn needed(&self, run: &UpRun, resumed_past: bool) -> bool {
        !resumed_past && network::runs_flannel(run.ctx().loaded.cluster.spec.networking.cni)
    }
    fn plan<'a>(&'a self, _: &'a UpRun) -> Plan<'a> {
        let line = "wait until the operator's pod is ready and holds its leader Lease".to_string();
        async move { Ok(vec![line]) }.map(with_causes).boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move { operator::wait_leading(run.client()?).await }
            .map(with_causes)
            .boxed()
    }
}

/// A dry run's lines for what a step would change; `none` when nothing.
fn would(c: &Changes, none: &str) -> Vec<String> {
    let mut lines = vec![];
    let mut count = |verb: &str, items: &[String], what: &str| {
        if !items.is_empty() {
            lines.push(format!("{verb} {} {what}", items.len()));
        }
    };
    count("upload", &c.uploaded, "files");
    count("write", &c.written, "files");
    let mut names = |verb: &str, items: &[String]| {
        if !items.is_empty() {
            lines.push(format!("{verb} {}", items.join(", ")));
        }
    };
    names("issue", &c.issued);
    names("start", &c.started);
    names("restart", &c.restarted);
    if lines.is_empty() {
        lines.push(none.to_string());
    }
    lines
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<UpPhase> {
        up_phases().iter().map(|p| p.key()).collect()
    }

    #[test]
    fn the_list_is_up_in_order_each_phase_once() {
        let names: Vec<&str> = keys().iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "connect",
                "preflight",
                "artifacts",
                "certificates",
                "configuration",
                "units",
                "images",
                "control plane ready",
                "node ready",
                "cluster add-ons",
                "operator leading",
            ]
        );
    }

    /// The engine waits only for phases listed before (a later one would
    /// never be done first): no phase may name itself or one after it.
    #[test]
    fn a_phase_waits_only_for_phases_listed_before_it() {
        let keys = keys();
        for (i, phase) in up_phases().iter().enumerate() {
            for dep in phase.after().unwrap_or_default() {
                let at = keys.iter().position(|k| k == dep).unwrap();
                assert!(at < i, "{:?} waits for {dep:?}", phase.key());
            }
        }
    }

    /// A dry run runs the phases that only look: exactly connect and
    /// preflight, so `plan` never reaches a change.
    #[test]
    fn only_connect_and_preflight_run_in_a_dry_run() {
        let observing: Vec<UpPhase> = up_phases()
            .iter()
            .filter(|p| p.effect() == Effect::Observe)
            .map(|p| p.key())
            .collect();
        assert_eq!(observing, [UpPhase::Connect, UpPhase::Preflight]);
    }

    #[test]
    fn a_dry_run_line_says_what_would_change_or_that_nothing_would() {
        let c = Changes {
            uploaded: vec!["a".into(), "b".into()],
            issued: vec!["apiserver".into()],
            ..Changes::default()
        };
        assert_eq!(would(&c, "-"), ["upload 2 files", "issue apiserver"]);
        assert_eq!(would(&Changes::default(), "in place"), ["in place"]);
    }
}
