//! Delete, as a procedure on the phase engine: drain (cordon, then the
//! Eviction API, so PodDisruptionBudgets hold) → reset the machine over SSH
//! (its kubelet stops before its Node goes, or it would register the Node
//! again) → delete the Node. Tolerates a join that never ran or half ran.
//! Any failure keeps the finalizer, with the reason in status and an Event;
//! the skip-host-cleanup annotation is the one way out.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::{WorkerJoinPhase as Phase, WorkerJoinStatus};
use kubeup_provision::converge;
use serde_json::json;

use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use kubeup_provision::phase::{self as engine, Event, Live, PhaseKey, Procedure, Progress, Step};

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::decide::{self, SKIP_HOST_CLEANUP};
use crate::workerjoin::write::{self, Count, Note, Writes};
use crate::workerjoin::{access, knownhosts};

/// The removal's phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Removal {
    Draining,
    ResettingHost,
    DeletingNode,
}

impl PhaseKey for Removal {
    fn name(self) -> &'static str {
        match self {
            Removal::Draining => "Draining",
            Removal::ResettingHost => "ResettingHost",
            Removal::DeletingNode => "DeletingNode",
        }
    }
}

/// What the removal's phases share.
struct Remove<'a> {
    ctx: &'a Context,
    wj: &'a WorkerJoin,
    owner: &'a str,
    node_name: Option<String>,
    /// The Node is this WorkerJoin's (and was drained).
    owned: AtomicBool,
    notes: std::sync::Mutex<Vec<Note>>,
}

impl Remove<'_> {
    fn note(&self, warning: bool, reason: &str, note: String) {
        self.notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Note {
                warning,
                reason: reason.into(),
                action: "Delete",
                note,
            });
    }
}

/// The removal, in order.
fn procedure<'p, 'a>(host: &str) -> Procedure<'p, Remove<'a>, Removal, Error> {
    Procedure::new(host, vec![&Draining, &ResettingHost, &DeletingNode])
}

type Planned<'f> = BoxFuture<'f, Result<Vec<String>>>;
type Ran<'f> = BoxFuture<'f, Result<String>>;

struct Draining;

impl<'a> engine::Phase<Remove<'a>, Removal, Error> for Draining {
    fn key(&self) -> Removal {
        Removal::Draining
    }
    fn title(&self) -> &'static str {
        "cordon and drain the Node"
    }
    fn plan<'f>(&'f self, r: &'f Remove<'a>) -> Planned<'f> {
        async move { Ok(vec![format!("drain Node {:?}", r.node_name)]) }.boxed()
    }
    fn run<'f>(&'f self, r: &'f Remove<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let Some(n) = &r.node_name else {
                return Ok("no Node was ever named".into());
            };
            let owned = drain(r.ctx, n, r.owner).await?;
            r.owned.store(owned, Ordering::SeqCst);
            Ok(if owned {
                format!("Node {n} drained")
            } else {
                format!("Node {n} is not ours")
            })
        }
        .boxed()
    }
}

struct ResettingHost;

impl<'a> engine::Phase<Remove<'a>, Removal, Error> for ResettingHost {
    fn key(&self) -> Removal {
        Removal::ResettingHost
    }
    fn title(&self) -> &'static str {
        "stop kubeup's units and remove what it installed"
    }
    fn plan<'f>(&'f self, r: &'f Remove<'a>) -> Planned<'f> {
        async move { Ok(vec![format!("reset {}", r.wj.spec.address)]) }.boxed()
    }
    fn run<'f>(&'f self, r: &'f Remove<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            if skip_host_cleanup(r.wj) {
                r.note(
                    true,
                    "HostCleanupSkipped",
                    skipped_note(r.wj, r.node_name.as_deref()),
                );
                return Ok("skipped (annotation)".into());
            }
            if !touched_host(r.wj) {
                return Ok("the join never changed the host".into());
            }
            let removed = reset(r.ctx, r.wj).await?;
            let detail = format!(
                "{}: units stopped, {} paths removed",
                r.wj.spec.address,
                removed.len()
            );
            r.note(false, "HostReset", detail.clone());
            Ok(detail)
        }
        .boxed()
    }
}

struct DeletingNode;

impl<'a> engine::Phase<Remove<'a>, Removal, Error> for DeletingNode {
    fn key(&self) -> Removal {
        Removal::DeletingNode
    }
    fn title(&self) -> &'static str {
        "delete the Node"
    }
    fn needed(&self, r: &Remove<'a>, _: bool) -> bool {
        r.node_name.is_some()
    }
    fn plan<'f>(&'f self, r: &'f Remove<'a>) -> Planned<'f> {
        async move { Ok(vec![format!("delete Node {:?}", r.node_name)]) }.boxed()
    }
    fn run<'f>(&'f self, r: &'f Remove<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let Some(n) = r
                .node_name
                .as_deref()
                .filter(|_| r.owned.load(Ordering::SeqCst))
            else {
                return Ok("no Node of ours".into());
            };
            if delete_node(r.ctx, n, r.owner).await? {
                r.note(
                    false,
                    "NodeDeleted",
                    format!("Node {n} drained and deleted"),
                );
            }
            Ok(format!("Node {n} deleted"))
        }
        .boxed()
    }
}

/// Removal progress goes to the log: status stays `Deleting` throughout.
struct Logged;

impl Progress<Removal, Error> for Logged {
    fn event<'e>(&'e self, e: Event<'e, Removal>) -> BoxFuture<'e, Result<()>> {
        if let Step::Done { detail, .. } = e.step {
            tracing::info!(step = e.phase.name(), host = e.host, detail, "removal");
        }
        async { Ok(()) }.boxed()
    }
}

/// Take the worker out: `Deleting` recorded first, then the removal; what
/// to write about it, and whether it succeeded (an error keeps the
/// finalizer).
pub async fn remove(ctx: &Context, wj: &WorkerJoin, owner: &str) -> (Writes, Result<()>) {
    let mut st = wj.status.clone().unwrap_or_default();
    let generation = wj.metadata.generation.unwrap_or(0);
    if st.phase != Phase::Deleting {
        st.phase = Phase::Deleting;
        let mut announce = Writes::none();
        announce.status = Some(st.clone());
        announce.events.push(Note {
            warning: false,
            reason: Phase::Deleting.as_str().into(),
            action: "Delete",
            note: Phase::Deleting.describe().into(),
        });
        if let Err(e) = write::write(ctx, wj, owner, announce).await {
            return (Writes::none(), Err(e));
        }
    }
    let r = Remove {
        ctx,
        wj,
        owner,
        node_name: decide::node_name(&wj.spec, &st, None),
        owned: AtomicBool::new(false),
        notes: Default::default(),
    };
    let walked = procedure(&wj.spec.address).apply(&r, &Logged, None).await;
    let mut writes = Writes::none();
    writes.events = r
        .notes
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match walked {
        Ok(_) => {
            // Its host keys go with it: a WorkerJoin made again trusts afresh.
            let uid = wj.uid().unwrap_or_default();
            if let Err(e) = knownhosts::forget(&ctx.client, &ctx.settings.namespace, &uid).await {
                tracing::warn!(error = %e, "could not drop the recorded host keys");
            }
            (writes, Ok(()))
        }
        Err(failed) => {
            let e = failed.error;
            let message = format!(
                "{e}; the finalizer stays until this succeeds (the Node, cordoned, stays until the host is reset). If the machine is gone for good, \
                 annotate the WorkerJoin with {SKIP_HOST_CLEANUP}=true to release it without host cleanup"
            );
            st.attempts += 1;
            st.last_error = Some(message.clone());
            crate::workerjoin::status::set(
                &mut st,
                kubeup_crds::WorkerJoinCondition::Ready.as_str(),
                kubeup_crds::conditions::ConditionStatus::False,
                "CleanupFailed",
                message.clone(),
                generation,
            );
            writes.status = Some(st);
            writes.events.push(Note {
                warning: true,
                reason: e.category(),
                action: "Delete",
                note: message,
            });
            writes
                .counts
                .extend(e.ssh_category().map(|category| Count::Ssh { category }));
            // An error, not a requeue: an Ok from the cleanup would release
            // the finalizer. error_policy backs off.
            (writes, Err(e))
        }
    }
}

/// What stays valid on a host released without cleanup.
fn skipped_note(wj: &WorkerJoin, node: Option<&str>) -> String {
    let node = node.unwrap_or("(never named)");
    format!(
        "{SKIP_HOST_CLEANUP}=true: {} was not reset. kube-proxy's and flannel's tokens are bound to the Node and die with it, but the kubelet's client certificate (system:node:{node}, valid up to a year from issue) stays valid until it expires: a kubelet still running there can register the Node again. If the machine may come back, reset it (kubeup reset) or wipe /etc/kubernetes and /var/lib/kubelet on it",
        wj.spec.address
    )
}

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
