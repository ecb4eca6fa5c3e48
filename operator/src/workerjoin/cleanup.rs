//! The steps of taking a worker out ([`super::removal`] orders them): drain
//! (cordon, then the Eviction API, so PodDisruptionBudgets hold), reset the
//! machine over SSH, delete the Node; and telling a removal from a
//! teardown. Tolerates a join that never ran or half ran.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::{WorkerJoinPhase as Phase, WorkerJoinStatus};
use kubeup_provision::converge;
use serde_json::json;

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::access;
use crate::workerjoin::decide::SKIP_HOST_CLEANUP;

/// The CRD whose deletion is a teardown, not a worker removal.
pub const WORKERJOIN_CRD: &str = "workerjoins.kubeup.dev";

/// Whether the join ever changed the machine (a refused, dry-run or
/// host-key-failed join did not, and its machine is left alone).
pub fn touched_host(wj: &WorkerJoin) -> bool {
    let status = wj.status.clone().unwrap_or_default();
    !wj.spec.dry_run && touched(&status)
}

fn touched(status: &WorkerJoinStatus) -> bool {
    status.phase_durations.contains_key("Preflight")
        || matches!(
            status.phase,
            Phase::Installing
                | Phase::Certificates
                | Phase::Configuring
                | Phase::Starting
                | Phase::WaitingForNode
                | Phase::Ready
        )
}

/// Why this deletion is a teardown (the WorkerJoin's namespace, or the
/// WorkerJoin CRD itself, is being deleted) rather than "take this worker
/// out", if it is.
pub async fn teardown(ctx: &Context, wj: &WorkerJoin) -> Result<Option<String>> {
    let ns = wj.namespace().unwrap_or_default();
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let terminating = namespaces
        .get_opt(&ns)
        .await
        .map_err(Error::kube(format!("read Namespace {ns}")))?
        .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
    if terminating {
        return Ok(Some(format!("namespace {ns} is being deleted")));
    }
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let crd = crds
        .get_opt(WORKERJOIN_CRD)
        .await
        .map_err(Error::kube(format!(
            "read CustomResourceDefinition {WORKERJOIN_CRD}"
        )))?;
    Ok(crd
        .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
        .then(|| format!("the CustomResourceDefinition {WORKERJOIN_CRD} is being deleted")))
}

pub fn skip_host_cleanup(wj: &WorkerJoin) -> bool {
    wj.annotations()
        .get(SKIP_HOST_CLEANUP)
        .is_some_and(|v| v == "true")
}

/// Pods a drain evicts: not mirror pods, not DaemonSet pods, not already
/// terminating or finished.
pub fn evictable(pod: &Pod) -> bool {
    let mirror = pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror");
    let daemonset = pod.owner_references().iter().any(|o| o.kind == "DaemonSet");
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !mirror && !daemonset && !finished && pod.metadata.deletion_timestamp.is_none()
}

/// Cordon and drain `node`; `false` (nothing done) when there is no such
/// Node or it is not this WorkerJoin's (annotation).
pub async fn drain(ctx: &Context, node_name: &str, owner: &str) -> Result<bool> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    if owned_node(&nodes, node_name, owner).await?.is_none() {
        return Ok(false);
    }
    nodes
        .patch(
            node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .map_err(Error::kube(format!("cordon Node {node_name}")))?;

    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let started = Instant::now();
    loop {
        let list = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
            .await
            .map_err(Error::kube(format!("list the pods on Node {node_name}")))?;
        let left: Vec<Pod> = list.items.into_iter().filter(evictable).collect();
        if left.is_empty() {
            break;
        }
        let mut blocked = vec![];
        for pod in &left {
            let ns = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            match api.evict(&pod.name_any(), &EvictParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                // A PodDisruptionBudget says not now.
                Err(kube::Error::Api(e)) if e.code == 429 => {
                    blocked.push(format!("{ns}/{}", pod.name_any()));
                }
                Err(e) => {
                    return Err(Error::kube(format!("evict pod {ns}/{}", pod.name_any()))(e));
                }
            }
        }
        if started.elapsed() > ctx.settings.drain_timeout {
            return Err(Error::Drain {
                node: node_name.into(),
                reason: format!(
                    "{} pod(s) not evicted within {}s{}: {}",
                    left.len(),
                    ctx.settings.drain_timeout.as_secs(),
                    if blocked.is_empty() {
                        ""
                    } else {
                        " (a PodDisruptionBudget refuses their eviction)"
                    },
                    left.iter()
                        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(true)
}

/// Delete the Node when it is still this WorkerJoin's (re-read: it may have
/// changed while the host was reset).
pub async fn delete_node(ctx: &Context, node_name: &str, owner: &str) -> Result<bool> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    if owned_node(&nodes, node_name, owner).await?.is_none() {
        return Ok(false);
    }
    match nodes.delete(node_name, &Default::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        Err(e) => Err(Error::kube(format!("delete Node {node_name}"))(e)),
    }
}

/// The Node `node_name` when it exists and is recorded as `owner`'s; any
/// other Node is left alone.
async fn owned_node(nodes: &Api<Node>, node_name: &str, owner: &str) -> Result<Option<Node>> {
    let node = nodes
        .get_opt(node_name)
        .await
        .map_err(Error::kube(format!("read Node {node_name}")))?;
    Ok(node.filter(|n| {
        let ours = crate::workerjoin::nodeclaim::recorded_owner(n) == Some(owner);
        if !ours {
            tracing::warn!(
                node = node_name,
                "the Node is not recorded as this WorkerJoin's; left alone"
            );
        }
        ours
    }))
}

/// Reset the host: stop and disable kubeup's units, remove every file it
/// installed. Returns the removed paths.
pub async fn reset(ctx: &Context, wj: &WorkerJoin) -> Result<Vec<String>> {
    let ns = wj.namespace().unwrap_or_default();
    let conn = access::connect(
        &ctx.client,
        &ns,
        wj,
        &ctx.settings.ssh,
        &ctx.settings.namespace,
    )
    .await?;
    let removed = converge::reset_host(&conn.session).await;
    conn.session.close().await;
    Ok(removed?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    #[test]
    fn drain_skips_daemonsets_and_mirror_pods() {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(evictable(&p));
        p.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            ..Default::default()
        }]);
        assert!(!evictable(&p));
        p.metadata.owner_references = None;
        p.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
        assert!(!evictable(&p));
    }

    #[test]
    fn only_a_join_that_got_past_preflight_touched_the_host() {
        let mut s = WorkerJoinStatus::default();
        assert!(!touched(&s));
        s.phase = Phase::Failed;
        assert!(!touched(&s), "a host key mismatch installs nothing");
        s.phase_durations.insert("Preflight".into(), 0.1);
        assert!(touched(&s));
    }
}
