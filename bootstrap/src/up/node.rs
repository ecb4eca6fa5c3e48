//! Waiting on the running cluster: API ready, the controller's Node
//! registered, networked and Ready.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kubeup_provision::converge;
use kubeup_provision::hostplan::configs;
use kubeup_provision::ssh::{Command, Session};

use super::ControllerContext;

const API_TIMEOUT: Duration = Duration::from_secs(120);
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// Forwarding on (per network namespace); cheap and idempotent.
pub async fn apply_sysctls(session: &Session, dry_run: bool) -> Result<()> {
    if !dry_run {
        session
            .run(&Command::shell("sysctl -q -w net.ipv4.ip_forward=1").privileged())
            .await?;
    }
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

/// Wait for the Node, give it the CNI config for its podCIDR, label it as
/// control plane, wait for Ready. Returns whether the CNI config changed.
pub async fn ensure_node(
    client: &kube::Client,
    session: &Session,
    name: &str,
    _ctx: &ControllerContext,
) -> Result<bool> {
    let nodes: Api<Node> = Api::all(client.clone());
    let started = Instant::now();
    let pod_cidr = loop {
        if let Some(node) = nodes.get_opt(name).await?
            && let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.clone())
        {
            break cidr;
        }
        if started.elapsed() > NODE_TIMEOUT {
            let journal = journal_tail(session, "kubelet").await;
            bail!("node {name} did not register with a podCIDR within {NODE_TIMEOUT:?}\n{journal}");
        }
        tokio::time::sleep(POLL).await;
    };
    let cni = configs::cni_bridge_conflist(&pod_cidr);
    let changed = !converge::write_files(session, std::slice::from_ref(&cni), false)
        .await?
        .written
        .is_empty();

    // Kubelets may not label themselves node-role.kubernetes.io/*.
    let label =
        serde_json::json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&label))
        .await?;

    loop {
        let node = nodes.get(name).await?;
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            return Ok(changed);
        }
        if started.elapsed() > NODE_TIMEOUT {
            let journal = journal_tail(session, "kubelet").await;
            bail!("node {name} did not become Ready within {NODE_TIMEOUT:?}\n{journal}");
        }
        tokio::time::sleep(POLL).await;
    }
}
