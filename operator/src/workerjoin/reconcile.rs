//! The WorkerJoin controller: `finalizer()` outermost; inside, read →
//! validate → plan (pure, [`crate::workerjoin::decide`]) → act ([`crate::workerjoin::join`],
//! [`crate::workerjoin::cleanup`]) → status by server-side apply.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_crds::conditions::ConditionStatus;
use kubeup_crds::workerjoin::WorkerJoinPhase as Phase;
use tracing::{Instrument, info_span};

use crate::error::{Error, Result};
use crate::runtime::context::{Context, Memory};
use crate::workerjoin::access;
use crate::workerjoin::cleanup;
use crate::workerjoin::decide::{
    self, Decision, FINALIZER, NODE_LABEL, Observed, owner_ref, parse_owner,
};
use crate::workerjoin::join::{self, Outcome, Runner};
use crate::workerjoin::knownhosts;
use crate::workerjoin::nodeclaim::{self, created};
use crate::workerjoin::specguard::{self, ClusterFacts};
use crate::workerjoin::status;

/// Steady-state resync of a joined node.
const RESYNC: Duration = Duration::from_secs(300);

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
    let mut runner = Runner::new(ctx, wj);
    let generation = runner.generation;
    let current = wj.status.clone().unwrap_or_default();
    if current.last_error.as_deref() == Some(message.as_str()) && current.phase == Phase::Failed {
        return Ok(Action::await_change());
    }
    save_not_ready(
        &mut runner,
        generation,
        Phase::Failed,
        "NamespaceNotServed",
        &message,
    )
    .await?;
    ctx.event(wj, true, "NamespaceNotServed", "Validate", message)
        .await;
    Ok(Action::await_change())
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
    ctx.metrics.reconcile_error(&err.category());
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

/// The claims of other WorkerJoins on the same SSH endpoint (address and
/// port: machines behind one NAT address differ by port), for the
/// duplicate check.
/// Addresses are compared as the machines they name: an IP and a DNS name
/// that resolves to it are one machine.
async fn claims(ctx: &Context, wj: &WorkerJoin, mine: &[IpAddr]) -> Vec<(String, String)> {
    let me = wj.uid();
    let others: Vec<_> = ctx
        .store
        .state()
        .into_iter()
        .filter(|o| o.uid() != me && o.spec.port == wj.spec.port)
        .collect();
    let mut out = vec![];
    for o in others {
        let same = o.spec.address.eq_ignore_ascii_case(&wj.spec.address) || {
            let theirs = resolve(&o.spec.address, o.spec.port).await;
            theirs.iter().any(|ip| mine.contains(ip))
        };
        if same {
            out.push((
                created(&o),
                format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
            ));
        }
    }
    out
}

/// The IPs an address names: itself when it is one, else what it resolves
/// to now (nothing when it does not resolve within two seconds).
async fn resolve(address: &str, port: u16) -> Vec<IpAddr> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return vec![ip];
    }
    let lookup = tokio::net::lookup_host((address, port));
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        _ => vec![],
    }
}

async fn apply(wj: Arc<WorkerJoin>, ctx: Arc<Context>) -> Result<Action> {
    let ns = wj.namespace().unwrap_or_default();
    let key = owner_ref(&ns, &wj.name_any());
    let generation = wj.metadata.generation.unwrap_or(0);
    let current = wj.status.clone().unwrap_or_default();

    // ---- read
    let (secret, secret_rv) = access::secret_state(&ctx.client, &ns, &wj).await?;
    let node_name = decide::node_name(&wj.spec, &current, None);
    let node = match &node_name {
        Some(n) => Api::<Node>::all(ctx.client.clone())
            .get_opt(n)
            .await
            .map_err(Error::kube(format!("read Node {n}")))?,
        None => None,
    };
    let cluster = join::read_cluster(&ctx.client).await?;
    let facts = ClusterFacts::from_cluster(&cluster, ctx.settings.allow_loopback);
    let mine = resolve(&wj.spec.address, wj.spec.port).await;
    let spec_problems = spec_problems(&wj, &facts, &mine);
    let node_conflict = node_name
        .as_deref()
        .and_then(|n| nodeclaim::check(&ctx, &wj, n, node.as_ref()));
    let me = (created(&wj), format!("{ns}/{}", wj.name_any()));
    let conflict = decide::conflicting_owner((&me.0, &me.1), &claims(&ctx, &wj, &mine).await);
    let mut mem = ctx.memory(&key);
    // A refused duplicate is not blocked: it may own the machine once the
    // other WorkerJoin is gone.
    let refused_duplicate = kubeup_crds::conditions::find(&current.conditions, status::READY)
        .is_some_and(|c| c.reason == "DuplicateAddress" || c.reason == "NodeNameTaken");
    let blocked = current.phase == Phase::Failed
        && current.observed_generation == Some(generation)
        && current.last_error.is_some()
        && !refused_duplicate
        && match &mem.blocked_secret_rv {
            Some(rv) => Some(rv) == secret_rv.as_ref(),
            None => {
                // After a restart: block, and remember the Secret as it is.
                mem.blocked_secret_rv = secret_rv.clone();
                ctx.set_memory(&key, mem.clone());
                true
            }
        };
    let backoff_left = if current.observed_generation == Some(generation) {
        mem.next_attempt
            .map(|t| t.saturating_duration_since(Instant::now()))
    } else {
        None
    };

    // ---- plan
    let observed = Observed {
        generation,
        spec: &wj.spec,
        status: &current,
        secret,
        spec_problems,
        conflict,
        node_conflict,
        node: node.as_ref().map(join::node_view),
        blocked,
        backoff_left,
    };
    let decision = decide::decide(&observed);
    tracing::debug!(?decision, "decided");

    // ---- act + status
    let mut runner = Runner::new(&ctx, &wj);
    match decision {
        Decision::Refuse { reason, message } => {
            let changed = current.phase != Phase::Failed
                || current.last_error.as_deref() != Some(message.as_str());
            save_not_ready(&mut runner, generation, Phase::Failed, reason, &message).await?;
            if changed {
                ctx.event(&wj, true, reason, "Validate", message).await;
            }
            // A duplicate may become the owner when the other goes away.
            Ok(
                if reason == "DuplicateAddress" || reason == "NodeNameTaken" {
                    Action::requeue(Duration::from_secs(60))
                } else {
                    Action::await_change()
                },
            )
        }
        Decision::WaitForSecret { reason, message } => {
            let changed = current.last_error.as_deref() != Some(message.as_str());
            save_not_ready(&mut runner, generation, Phase::Connecting, reason, &message).await?;
            if changed {
                ctx.event(&wj, true, reason, "ReadSecret", message).await;
            }
            // The Secret watch brings us back; the requeue is a safety net.
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Decision::Blocked => Ok(Action::await_change()),
        Decision::Backoff(left) => Ok(Action::requeue(left)),
        Decision::InSync => {
            // decide() says InSync only with a Node; without one, look again.
            let Some(node) = node else {
                return Ok(Action::requeue(Duration::from_secs(5)));
            };
            join::sync_node(&ctx.client, &node, &key, &wj).await?;
            let view = join::node_view(&node);
            status::apply_node_conditions(&mut runner.status, Some(&view), generation);
            // Node-bound tokens renewed when due (SSH only then).
            let renew_in = crate::workerjoin::nodetoken::renew_if_due(&mut runner).await;
            if runner.status != current {
                runner.save().await?;
            }
            Ok(Action::requeue(RESYNC.min(renew_in)))
        }
        Decision::DryRun | Decision::Join { .. } => {
            let (from, dry_run) = match decision {
                Decision::Join { from } => (from, false),
                _ => (Phase::Connecting, true),
            };
            ctx.metrics.joins_started.inc();
            ctx.metrics.joins_in_flight.inc();
            let started = Instant::now();
            let result = runner.run(from, dry_run).await;
            ctx.metrics.joins_in_flight.dec();
            match result {
                Ok(outcome) => {
                    ctx.set_memory(&key, Memory::default());
                    runner.status.attempts = 0;
                    runner.status.last_error = None;
                    match outcome {
                        Outcome::Ready => {
                            runner.status.phase = Phase::Ready;
                            let view = node.as_ref().map(join::node_view);
                            let fresh = match &runner.status.node_name {
                                Some(n) => Api::<Node>::all(ctx.client.clone())
                                    .get_opt(n)
                                    .await
                                    .ok()
                                    .flatten()
                                    .map(|n| join::node_view(&n)),
                                None => view,
                            };
                            status::apply_node_conditions(
                                &mut runner.status,
                                fresh.as_ref(),
                                generation,
                            );
                            runner.save().await?;
                            ctx.metrics.joins_succeeded.inc();
                            ctx.metrics
                                .join_duration
                                .observe(started.elapsed().as_secs_f64());
                            ctx.event(
                                &wj,
                                false,
                                "Ready",
                                "Join",
                                format!(
                                    "Node {} is Ready ({:.1}s)",
                                    runner.status.node_name.clone().unwrap_or_default(),
                                    started.elapsed().as_secs_f64()
                                ),
                            )
                            .await;
                            Ok(Action::requeue(RESYNC))
                        }
                        Outcome::WaitingForNode => {
                            runner.save().await?;
                            Ok(Action::requeue(Duration::from_secs(10)))
                        }
                        Outcome::DryRunComplete => Ok(Action::await_change()),
                    }
                }
                Err(e) => failed(&ctx, &wj, &key, runner, e, secret_rv).await,
            }
        }
    }
}

/// Problems of the spec against the cluster, including what a DNS-name
/// address resolves to now.
fn spec_problems(wj: &WorkerJoin, facts: &ClusterFacts, resolved: &[IpAddr]) -> Vec<String> {
    let mut out = specguard::problems(&wj.spec, facts);
    if wj.spec.address.parse::<IpAddr>().is_err() {
        out.extend(resolved.iter().filter_map(|ip| {
            facts
                .forbidden_ip(*ip)
                .map(|why| format!("spec.address: {} resolves to {ip}: {why}", wj.spec.address))
        }));
    }
    out
}

/// Record a failed attempt: attempts, lastError, conditions, an Event;
/// back off, or for a permanent error stop and wait for a change.
async fn failed(
    ctx: &Context,
    wj: &WorkerJoin,
    key: &str,
    mut runner: Runner<'_>,
    e: Error,
    secret_rv: Option<String>,
) -> Result<Action> {
    let reason = e.category();
    let message = e.to_string();
    tracing::warn!(error = %message, reason, permanent = e.is_permanent(), "join attempt failed");
    ctx.metrics.join_failed(&reason);
    if let Some(c) = e.ssh_category() {
        ctx.metrics.ssh_error(c);
    }
    let generation = runner.generation;
    runner.status.attempts += 1;
    runner.status.last_error = Some(message.clone());
    if e.is_permanent() {
        runner.status.phase = Phase::Failed;
    }
    status::set(
        &mut runner.status,
        status::READY,
        ConditionStatus::False,
        &reason,
        message.clone(),
        generation,
    );
    runner.save().await?;
    ctx.event(wj, true, &reason, "Join", message).await;
    if e.is_permanent() {
        ctx.set_memory(
            key,
            Memory {
                next_attempt: None,
                blocked_secret_rv: secret_rv,
            },
        );
        Ok(Action::await_change())
    } else {
        let wait = decide::backoff(runner.status.attempts, jitter());
        ctx.set_memory(
            key,
            Memory {
                next_attempt: Some(Instant::now() + wait),
                blocked_secret_rv: None,
            },
        );
        Ok(Action::requeue(wait))
    }
}

/// Delete: drain the Node, reset the host (its kubelet stops before its
/// Node goes, or it would register the Node again), then delete the Node.
/// Any failure keeps the finalizer (the error goes back to `finalizer()`,
/// which removes it only on success) with the reason in status and an
/// Event; the skip-host-cleanup annotation is the one way out.
async fn cleanup(wj: Arc<WorkerJoin>, ctx: Arc<Context>) -> Result<Action> {
    let ns = wj.namespace().unwrap_or_default();
    let key = owner_ref(&ns, &wj.name_any());
    if let Some(why) = cleanup::teardown(&ctx, &wj).await? {
        // Not a request to take this worker out: the namespace or the API
        // is going away. Hosts and Nodes are left as they are (no fleet
        // reset by surprise) and the object is released (nothing stranded
        // in Terminating).
        tracing::warn!(
            workerjoin = %key,
            node = ?decide::node_name(&wj.spec, &wj.status.clone().unwrap_or_default(), None),
            "{why}: released without draining its Node or resetting {}; the node keeps running",
            wj.spec.address
        );
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    let mut runner = Runner::new(&ctx, &wj);
    if runner.status.phase != Phase::Deleting {
        runner.enter(Phase::Deleting).await?;
    }
    let result = async {
        let node_name = decide::node_name(&wj.spec, &runner.status, None);
        let owned = match &node_name {
            Some(n) => cleanup::drain(&ctx, n, &key).await?,
            None => false,
        };
        if cleanup::skip_host_cleanup(&wj) {
            ctx.event(
                &wj,
                true,
                "HostCleanupSkipped",
                "Delete",
                skipped_note(&wj, node_name.as_deref()),
            )
            .await;
        } else if cleanup::touched_host(&wj) {
            let removed = cleanup::reset(&ctx, &wj).await?;
            ctx.event(
                &wj,
                false,
                "HostReset",
                "Delete",
                format!(
                    "{}: units stopped, {} paths removed",
                    wj.spec.address,
                    removed.len()
                ),
            )
            .await;
        }
        if let Some(n) = node_name.as_deref().filter(|_| owned)
            && cleanup::delete_node(&ctx, n, &key).await?
        {
            ctx.event(
                &wj,
                false,
                "NodeDeleted",
                "Delete",
                format!("Node {n} drained and deleted"),
            )
            .await;
        }
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            ctx.forget(&key);
            // Its host keys go with it: a WorkerJoin made again trusts afresh.
            let uid = wj.uid().unwrap_or_default();
            if let Err(e) = knownhosts::forget(&ctx.client, &ctx.settings.namespace, &uid).await {
                tracing::warn!(error = %e, "could not drop the recorded host keys");
            }
            Ok(Action::await_change())
        }
        Err(e) => {
            let message = format!(
                "{e}; the finalizer stays until this succeeds (the Node, cordoned, stays until the host is reset). If the machine is gone for good, \
                 annotate the WorkerJoin with {}=true to release it without host cleanup",
                decide::SKIP_HOST_CLEANUP
            );
            runner.status.attempts += 1;
            runner.status.last_error = Some(message.clone());
            status::set(
                &mut runner.status,
                status::READY,
                ConditionStatus::False,
                "CleanupFailed",
                message.clone(),
                runner.generation,
            );
            runner.save().await?;
            ctx.event(&wj, true, &e.category(), "Delete", message).await;
            if let Some(c) = e.ssh_category() {
                ctx.metrics.ssh_error(c);
            }
            // An error, not a requeue: an Ok from the cleanup would release
            // the finalizer. error_policy backs off.
            Err(e)
        }
    }
}

/// What stays valid on a host released without cleanup.
fn skipped_note(wj: &WorkerJoin, node: Option<&str>) -> String {
    let node = node.unwrap_or("(never named)");
    format!(
        "{}=true: {} was not reset. kube-proxy's and flannel's tokens are bound to the Node and die with it, but the kubelet's client certificate (system:node:{node}, valid up to a year from issue) stays valid until it expires: a kubelet still running there can register the Node again. If the machine may come back, reset it (kubeup reset) or wipe /etc/kubernetes and /var/lib/kubelet on it",
        decide::SKIP_HOST_CLEANUP,
        wj.spec.address
    )
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

/// Record a join that cannot go on for now: the phase it stops in, the
/// message as `lastError`, and `Ready=False` with the reason.
async fn save_not_ready(
    runner: &mut Runner<'_>,
    generation: i64,
    phase: Phase,
    reason: &str,
    message: &str,
) -> Result<()> {
    runner.status.observed_generation = Some(generation);
    runner.status.phase = phase;
    runner.status.last_error = Some(message.to_string());
    status::set(
        &mut runner.status,
        status::READY,
        ConditionStatus::False,
        reason,
        message.to_string(),
        generation,
    );
    runner.save().await
}
