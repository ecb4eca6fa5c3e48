//! Waiting on the running cluster: API ready, the controller's Node
//! registered, networked and Ready.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kubeup_crds::cluster::Cni;
use kubeup_provision::converge::{self, Changes};
use kubeup_provision::hostplan::network;
use kubeup_provision::hostplan::node::{self, NodeObject};
use kubeup_provision::hostplan::{Unit, layout};
use kubeup_provision::ssh::{Command, Session};

const API_TIMEOUT: Duration = Duration::from_secs(120);
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// Forwarding on (per network namespace); cheap and idempotent.
pub async fn apply_sysctls(session: &Session, dry_run: bool) -> Result<()> {
    if !dry_run {
        session
            .run(&Command::shell(node::FORWARDING_NOW).privileged())
            .await?;
    }
    Ok(())
}

/// The operator's own directory on the controller (its transfer cache,
/// mounted as a hostPath), owned by the user it runs as.
pub async fn operator_dirs(session: &Session, dry_run: bool) -> Result<()> {
    if dry_run {
        return Ok(());
    }
    let dir = layout::TRANSFER_CACHE;
    let uid = layout::OPERATOR_UID;
    session
        .run(&Command::shell(format!("install -d -o {uid} -g {uid} -m 0700 {dir}")).privileged())
        .await?;
    Ok(())
}

/// Wait for the apiserver's `/readyz`; on timeout the error carries the
/// tail of its journal.
pub async fn wait_ready(client: &kube::Client, session: &Session) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < API_TIMEOUT {
        let req = http::Request::get("/readyz").body(vec![])?;
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL).await;
    }
    let journal = journal_tail(session, "kube-apiserver").await;
    bail!(
        "kube-apiserver on {} was not ready after {:?} (last answer: {last})\n{journal}\nInspect: kubeup ssh -f cluster.yaml {} -- journalctl -u kube-apiserver -u etcd",
        session.host(),
        API_TIMEOUT,
        session.target().address
    )
}

pub async fn journal_tail(session: &Session, unit: &str) -> String {
    match session
        .output(
            &Command::new("journalctl")
                .args(["-u", unit, "-n", "15", "--no-pager", "-o", "cat"])
                .privileged(),
        )
        .await
    {
        Ok(out) => format!("last lines of {unit}:\n{}", out.stdout_str()),
        Err(_) => String::new(),
    }
}

/// The controller's Node: created up front (so the controller-manager gives
/// it a podCIDR before the kubelet runs), its CNI config written, the
/// kubelet started (or restarted when its inputs changed), then Ready.
pub async fn ensure_node(
    client: &kube::Client,
    session: &Session,
    name: &str,
    pod_cidr: &str,
    cni: Cni,
    restart: &BTreeSet<Unit>,
) -> Result<Changes> {
    let nodes: Api<Node> = Api::all(client.clone());
    let started = Instant::now();
    if nodes.get_opt(name).await?.is_none() {
        // In a cluster with no Node yet the first /24 is free: claim it at
        // creation (the controller-manager's allocator records existing
        // podCIDRs) instead of waiting seconds for its node-ipam controller.
        // With other Nodes present, leave the choice to the allocator.
        let first = nodes.list(&Default::default()).await?.items.is_empty();
        let cidr = if first {
            first_node_cidr(pod_cidr)
        } else {
            None
        };
        nodes
            .create(
                &PostParams::default(),
                &NodeObject::controller(name, cidr).build(),
            )
            .await?;
    }
    let node_cidr = loop {
        if let Some(node) = nodes.get_opt(name).await?
            && let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.clone())
        {
            break cidr;
        }
        if started.elapsed() > NODE_TIMEOUT {
            let journal = journal_tail(session, "kube-controller-manager").await;
            bail!(
                "node {name} got no podCIDR within {NODE_TIMEOUT:?} (the controller-manager allocates it)\n{journal}"
            );
        }
        tokio::time::sleep(POLL).await;
    };
    // The pod network (flannel and the node's CNI config) starts with the
    // kubelet; with `cni: none` nothing is written and the Node waits for
    // the user's CNI (NotReady), as with kubeadm.
    let conflist: Vec<_> = network::cni_conflist(cni, &node_cidr).into_iter().collect();
    let mut changes = converge::write_files(session, &conflist, false).await?;
    let mut units = network::units(cni).to_vec();
    units.push(Unit::Kubelet);
    let c = converge::ensure_units(session, &units, restart, false, false).await?;
    changes.merge(c);

    // Kubelets may not label themselves node-role.kubernetes.io/*.
    let label =
        serde_json::json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&label))
        .await?;

    if !network::runs_flannel(cni) {
        return Ok(changes);
    }
    loop {
        let node = nodes.get(name).await?;
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            return Ok(changes);
        }
        if started.elapsed() > NODE_TIMEOUT {
            let journal = journal_tail(session, "kubelet").await;
            bail!("node {name} did not become Ready within {NODE_TIMEOUT:?}\n{journal}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The first /24 of the cluster's pod CIDR (the allocator's mask size).
fn first_node_cidr(pod_cidr: &str) -> Option<String> {
    let net: ipnet::Ipv4Net = pod_cidr.parse().ok()?;
    let first = ipnet::Ipv4Net::new(net.network(), 24).ok()?;
    Some(first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_node_cidr_is_the_first_slash_24() {
        assert_eq!(
            first_node_cidr("10.244.0.0/16").as_deref(),
            Some("10.244.0.0/24")
        );
        assert_eq!(first_node_cidr("bogus"), None);
    }
}
