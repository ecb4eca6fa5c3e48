//! The WorkerJoin controller loop: `finalizer()` outermost; inside, a
//! reconcile reads observe ([`super::observe`]) → decide ([`super::decide`],
//! pure) → effects ([`super::effects`]: the join procedure, the steady-state
//! sync) → write ([`super::write`]: status, Events, metrics, memory in one
//! place). Delete runs the removal procedure ([`super::removal`]).

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::{Reason, WorkerJoinPhase as Phase};
use tracing::{Instrument, info_span};

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::decide::{self, Decision, FINALIZER, NODE_LABEL, owner_ref, parse_owner};
use crate::workerjoin::observe::{self, Observation};
use crate::workerjoin::write::{self, Writes};
use crate::workerjoin::{cleanup, effects, removal};

/// Reconcile one WorkerJoin.
///
/// Boxed: the join's futures borrow across awaits, and naming the future
/// `Send` here keeps the compiler from having to prove it for every lifetime
/// inside `Controller::run`.
pub fn reconcile(
    wj: Arc<WorkerJoin>,
    ctx: Arc<Context>,
) -> futures::future::BoxFuture<'static, Result<Action>> {
    Box::pin(reconcile_inner(wj, ctx))
}

async fn reconcile_inner(wj: Arc<WorkerJoin>, ctx: Arc<Context>) -> Result<Action> {
    let ns = wj.namespace().unwrap_or_default();
    let key = owner_ref(&ns, &wj.name_any());
    let span = info_span!("reconcile", workerjoin = %format!("{ns}/{}", wj.name_any()), host = %wj.spec.address);
    async move {
        let api: Api<WorkerJoin> = Api::namespaced(ctx.client.clone(), &ns);
        if !ctx.settings.serves(&ns) {
            return refuse_namespace(&ctx, &wj).await;
        }
        if wj.metadata.deletion_timestamp.is_some() && !still_there(&api, &wj).await? {
            return Ok(Action::await_change());
        }
        finalizer(&api, FINALIZER, wj, |event| async {
            match event {
                FinalizerEvent::Apply(wj) => apply(wj, ctx.clone()).await,
                FinalizerEvent::Cleanup(wj) => cleanup(wj, ctx.clone()).await,
            }
        })
        .await
        .map_err(|e| match e {
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
            other => Error::Finalizer(format!("{key}: {other}")),
        })
    }
    .instrument(span)
    .await
}

/// A WorkerJoin outside the served namespaces: refused with a condition,
/// no finalizer, nothing read (its Secret would be in a namespace whose
/// Secrets the operator may not, and must not, read for its author).
async fn refuse_namespace(ctx: &Context, wj: &WorkerJoin) -> Result<Action> {
    if wj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = wj.namespace().unwrap_or_default();
    let message = format!(
        "namespace {ns} is not served by this operator (it serves {}); create the WorkerJoin and its Secret there, or add {ns} to the chart's watchNamespaces",
        ctx.settings.served_namespaces().join(", ")
    );
    let current = wj.status.clone().unwrap_or_default();
    if current.last_error.as_deref() == Some(message.as_str()) && current.phase == Phase::Failed {
        return Ok(Action::await_change());
    }
    let obs = Observation::unread(wj);
    let refuse = Decision::Refuse {
        reason: Reason::NamespaceNotServed,
        message,
    };
    let writes = write::outcome(
        &refuse,
        effects::Done::Nothing,
        &obs,
        jitter(),
        Instant::now(),
    );
    write::write(ctx, wj, &obs.key, writes).await
}

/// Whether the WorkerJoin being deleted, as the cache shows it, is still
/// the one in the API. The cache can lag behind our own finalizer removal:
/// the object is then gone, or made again under the same name (a re-apply,
/// GitOps), and cleaning up again would reset a host that a new WorkerJoin
/// may already be joining.
pub async fn still_there(api: &Api<WorkerJoin>, cached: &WorkerJoin) -> Result<bool> {
    let name = cached.name_any();
    let fresh = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("read WorkerJoin {name}")))?;
    let same = fresh.as_ref().is_some_and(|f| f.uid() == cached.uid());
    if !same {
        tracing::info!(workerjoin = %name, "already deleted; nothing to clean up");
    }
    Ok(same)
}

/// Errors that escaped `apply`/`cleanup` (status could not be written, the
/// API failed): per-object exponential backoff kept in memory.
pub fn error_policy(wj: Arc<WorkerJoin>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = owner_ref(&wj.namespace().unwrap_or_default(), &wj.name_any());
    ctx.metrics.reconcile_error(err.category());
    let mut mem = ctx.memory(&key);
    let attempts = wj.status.as_ref().map_or(0, |s| s.attempts) + 1;
    let wait = decide::backoff(attempts, jitter());
    mem.next_attempt = Some(Instant::now() + wait);
    ctx.set_memory(&key, mem);
    tracing::warn!(workerjoin = %key, error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    f64::from(u16::from_le_bytes(b)) / 65536.0
}

/// One pass: observe → decide → effects → write.
async fn apply(wj: Arc<WorkerJoin>, ctx: Arc<Context>) -> Result<Action> {
    let obs = observe::observe(&ctx, &wj).await?;
    let decision = decide::decide(&obs.view(&wj));
    tracing::debug!(?decision, "decided");
    let done = effects::perform(&ctx, &wj, &decision, &obs).await?;
    let writes: Writes = write::outcome(&decision, done, &obs, jitter(), Instant::now());
    write::write(&ctx, &wj, &obs.key, writes).await
}

/// Delete: the removal procedure (drain → reset host → delete Node), or,
/// when the namespace or the API itself is going away, a release without
/// touching the host. Any failure keeps the finalizer (the error goes back
/// to `finalizer()`, which removes it only on success).
async fn cleanup(wj: Arc<WorkerJoin>, ctx: Arc<Context>) -> Result<Action> {
    let ns = wj.namespace().unwrap_or_default();
    let key = owner_ref(&ns, &wj.name_any());
    if let Some(why) = cleanup::teardown(&ctx, &wj).await? {
        // Not a request to take this worker out: hosts and Nodes are left
        // as they are (no fleet reset by surprise) and the object is
        // released (nothing stranded in Terminating).
        tracing::warn!(
            workerjoin = %key,
            node = ?decide::node_name(&wj.spec, &wj.status.clone().unwrap_or_default(), None),
            "{why}: released without draining its Node or resetting {}; the node keeps running",
            wj.spec.address
        );
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    let (writes, result) = removal::remove(&ctx, &wj, &key).await;
    write::write(&ctx, &wj, &key, writes).await?;
    result.map(|()| {
        ctx.forget(&key);
        Action::await_change()
    })
}

/// Verify the CRDs are served (the operator does not install them).
pub async fn check_crds(client: &kube::Client) -> anyhow::Result<()> {
    let list = client
        .list_api_group_resources(kubeup_crds::API_VERSION)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the kubeup.dev/v1alpha1 API is not served ({e}): apply charts/kubeup/crds/kubeup.dev.yaml first (kubeup up does)"
            )
        })?;
    for want in ["workerjoins", "clusters"] {
        if !list.resources.iter().any(|r| r.name == want) {
            anyhow::bail!(
                "the CRD {want}.kubeup.dev is not served: apply charts/kubeup/crds/kubeup.dev.yaml first"
            );
        }
    }
    Ok(())
}

/// Build and run the controller until shutdown.
pub async fn run(
    client: kube::Client,
    bundles: crate::runtime::bundle::Bundles,
    settings: crate::runtime::context::Settings,
    concurrency: u16,
    ready: Arc<std::sync::atomic::AtomicBool>,
    metrics_slot: Arc<std::sync::OnceLock<Arc<Context>>>,
) {
    let wjs: Api<WorkerJoin> = Api::all(client.clone());
    let controller = Controller::new(wjs, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(concurrency));
    let store = controller.store();
    let ctx = Arc::new(Context::new(
        client.clone(),
        bundles,
        settings,
        store.clone(),
    ));
    let _ = metrics_slot.set(ctx.clone());

    // Nodes → their WorkerJoin (annotation, else by node name in the store).
    // Metadata only: Node status and Secret data are never cached here.
    let node_store = store.clone();
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    // kubelet-serving CSRs of the nodes it joined, next to the joins.
    let approver = crate::serving::run(ctx.clone(), store.clone());
    // The controller's certificate expiry, beside the joins.
    let expiry = tokio::spawn(crate::certexpiry::run(ctx.clone()));
    // Every controller's readiness, beside them.
    let controllers = tokio::spawn(crate::controlplane::run(ctx.clone()));
    let mut controller = controller.watches(nodes, watcher::Config::default(), move |node| {
        let name = node.name_any();
        if let Some((ns, wj)) = node
            .annotations()
            .get(NODE_LABEL)
            .and_then(|v| parse_owner(v.as_str()))
        {
            return vec![ObjectRef::new(&wj).within(&ns)];
        }
        node_store
            .state()
            .iter()
            .filter(|w| {
                w.spec.node_name.as_deref() == Some(name.as_str())
                    || w.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
            })
            .map(|w| ObjectRef::from_obj(w.as_ref()))
            .collect::<Vec<_>>()
    });
    // The Cluster → every WorkerJoin: controllers added or removed change
    // what each machine's load balancer must list.
    let cluster_store = store.clone();
    let clusters: Api<PartialObjectMeta<kubeup_crds::Cluster>> = Api::all(client.clone());
    controller = controller.watches(clusters, watcher::Config::default(), move |_| {
        cluster_store
            .state()
            .iter()
            .map(|w| ObjectRef::from_obj(w.as_ref()))
            .collect::<Vec<_>>()
    });
    // Secrets → the WorkerJoins in their namespace that reference them;
    // watched in the served namespaces only (the RBAC grants no more).
    for ns in ctx.settings.served_namespaces() {
        let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), &ns);
        let secret_store = store.clone();
        controller = controller.watches(secrets, watcher::Config::default(), move |secret| {
            referencing(&secret_store, &secret)
        });
    }
    let joins = controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(workerjoin = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        });
    futures::future::join(joins, approver).await;
    expiry.abort();
    controllers.abort();
}

/// The WorkerJoins that name this Secret (SSH key or bastion key).
fn referencing(
    store: &kube::runtime::reflector::Store<WorkerJoin>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<WorkerJoin>> {
    let ns = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    store
        .state()
        .iter()
        .filter(|w| {
            w.namespace().as_deref() == Some(ns.as_str())
                && (w.spec.ssh_secret_ref.name == name
                    || w.spec
                        .bastion
                        .as_ref()
                        .and_then(|b| b.secret_ref.as_ref())
                        .is_some_and(|r| r.name == name))
        })
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}
