//! The phases of `up` that talk to the cluster once the control plane
//! runs. A dry run (`kubeup plan`) does not contact the cluster for them:
//! their plans say what they would wait for and apply.

use std::collections::BTreeSet;

use anyhow::Context as _;
use futures::FutureExt;
use kubeup_provision::converge;
use kubeup_provision::hostplan::{Unit, network};
use kubeup_provision::phase::{Live, Phase};

use super::{Plan, Run, UpPhase};
use crate::up::connect::with_causes;
use crate::up::run::UpRun;
use crate::up::{addons, certinfo, node, operator};

pub(super) struct ControlPlaneReady;

impl Phase<UpRun, UpPhase, anyhow::Error> for ControlPlaneReady {
    fn key(&self) -> UpPhase {
        UpPhase::ControlPlaneReady
    }
    fn title(&self) -> &'static str {
        "wait for the apiserver's /readyz, then start its controllers"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Units, UpPhase::EtcdPromote])
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        let ctx = run.ctx();
        let mut lines = vec![];
        if run.link.index == 0 {
            lines.push(format!(
                "write {} and {} (server {})",
                ctx.loaded.admin_kubeconfig().display(),
                ctx.loaded.super_admin_kubeconfig().display(),
                ctx.api_server()
            ));
        }
        lines.push(format!(
            "wait for {}/readyz, then start the controller-manager and scheduler",
            own_api_server(run)
        ));
        async move { Ok(lines) }.map(with_causes).boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let ctx = run.ctx();
            // `up` installs and repairs the cluster with the break-glass
            // credential, as kubeadm does: the everyday admin's group has no
            // rights until the `kubeup:cluster-admins` binding (applied with
            // the add-ons) exists. Each controller's phases talk to its own
            // apiserver, whatever the endpoint does.
            let client = crate::up::admin_client_at(
                &ctx.loaded.super_admin_kubeconfig(),
                Some(&own_api_server(run)),
            )
            .await?;
            node::wait_ready(&client, run.session()?).await?;
            run.set_client(client);
            let (restart, _) = run.restart();
            // Unit files were loaded by the units phase: no second reload.
            let c = converge::ensure_units(
                run.session()?,
                &super::host::AFTER_READY,
                &restart,
                false,
                false,
            )
            .await?;
            let detail = c.units_summary();
            run.merge(c);
            Ok(detail)
        }
        .map(with_causes)
        .boxed()
    }
}

/// This controller's own apiserver.
fn own_api_server(run: &UpRun) -> String {
    format!("https://{}:6443", run.link.controller.address)
}

pub(super) struct NodeReady;

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

pub(super) struct AddOns;

impl Phase<UpRun, UpPhase, anyhow::Error> for AddOns {
    fn key(&self) -> UpPhase {
        UpPhase::AddOns
    }
    fn title(&self) -> &'static str {
        "apply the CRDs, RBAC, the Cluster, the operator and the add-ons"
    }
    /// Once the first controller's apiserver is ready, beside the kubelets'
    /// start: the objects need the API, not a Ready Node (the pods they
    /// make are scheduled once one is).
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::ControlPlaneReady])
    }
    /// Once for the cluster, through the first controller.
    fn needed(&self, run: &UpRun, resumed_past: bool) -> bool {
        !resumed_past && run.link.index == 0
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
pub(super) struct OperatorLeading;

impl Phase<UpRun, UpPhase, anyhow::Error> for OperatorLeading {
    fn key(&self) -> UpPhase {
        UpPhase::OperatorLeading
    }
    fn title(&self) -> &'static str {
        "wait until the operator runs and leads"
    }
    /// With `cni: none` no pod is scheduled (the Node stays NotReady) until
    /// the user installs a pod network, as with kubeadm: nothing to wait for.
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::AddOns, UpPhase::NodeReady])
    }
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
