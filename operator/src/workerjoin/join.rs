//! One join of one WorkerJoin: what its phases share ([`Join`]) and where
//! their progress goes (status phase, phase durations, metrics, Events).
//!
//! Phases run at once where they may ([`super::phases`]), so what they hand
//! on lives in cells and locks here, and the status is behind an async lock
//! held across each save: saves never overtake each other.
//!
//! ~460 lines on purpose: the join's shared state and the one place that
//! turns the engine's progress into status, metrics and Events belong
//! together; split, a reader would chase each save across files.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use kubeup_crds::conditions::ConditionStatus;
use kubeup_crds::workerjoin::{WorkerJoinPhase as Phase, WorkerJoinStatus};
use kubeup_crds::{Cluster, WorkerJoin, WorkerJoinCondition};
use kubeup_provision::artifacts::BundleManifest;
use kubeup_provision::converge::Changes;
use kubeup_provision::hostplan::{NodeInput, Unit, configs};
use kubeup_provision::phase::{Event, Progress, Step, seconds};
use kubeup_provision::ssh::Session;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::runtime::context::{Context, FIELD_MANAGER};
use crate::workerjoin::decide::{self, owner_ref};
use crate::workerjoin::write::{self, Note, Writes};
use crate::workerjoin::{nodesync, pending, status};

/// What the phases of one join share.
pub struct Join<'a> {
    pub ctx: &'a Context,
    pub wj: &'a WorkerJoin,
    pub owner: String,
    pub generation: i64,
    pub cluster: Cluster,
    /// The bundle of the cluster's version: its directory and manifest.
    pub bundle: std::sync::Arc<(std::path::PathBuf, BundleManifest)>,
    status: Mutex<WorkerJoinStatus>,
    /// The phase stored before (Events only on transitions).
    shown: std::sync::Mutex<Phase>,
    session: OnceLock<std::sync::Arc<Session>>,
    /// The podCIDR the pre-created Node got (Configuring), if any yet.
    pod_cidr: OnceLock<String>,
    node_name: OnceLock<String>,
    /// What the phases changed; owed restarts are recorded on the host
    /// under this lock so concurrent phases never drop each other's.
    changes: Mutex<Changes>,
    /// The Node was Ready at the end of WaitingForNode.
    ready: std::sync::atomic::AtomicBool,
    /// Restarts an earlier pass owed, read beside preflight (when it ran).
    owed_earlier: OnceLock<BTreeSet<Unit>>,
    /// While a walk runs, where its saves queue for [`Join::drain_saves`]:
    /// progress is saved in order beside the phases, not before each.
    saves: std::sync::Mutex<Option<SaveQueue>>,
}

/// A save waiting for the API, and who waits for its outcome (if anyone).
type Queued = (Writes, Option<tokio::sync::oneshot::Sender<Result<()>>>);
type SaveQueue = tokio::sync::mpsc::UnboundedSender<Queued>;

impl<'a> Join<'a> {
    /// Everything a join reads from the API before it touches the host.
    pub async fn new(ctx: &'a Context, wj: &'a WorkerJoin) -> Result<Self> {
        let cluster = read_cluster(&ctx.client).await?;
        let full = ctx.bundles.get(&cluster.spec.kubernetes_version).await?;
        // A node gets no image of an add-on the cluster turned off.
        let manifest = kubeup_provision::addons::images_for(&full.1, &cluster.spec.addons);
        let bundle = std::sync::Arc::new((full.0.clone(), manifest));
        let mut status = wj.status.clone().unwrap_or_default();
        let generation = wj.metadata.generation.unwrap_or(0);
        if status.observed_generation != Some(generation) {
            status.observed_generation = Some(generation);
            status.attempts = 0;
            status.planned_actions.clear();
        }
        let ns = wj.namespace().unwrap_or_default();
        let name = decide::node_name(&wj.spec, &status, None);
        let known = OnceLock::new();
        if let Some(n) = name {
            let _ = known.set(n);
        }
        Ok(Self {
            owner: owner_ref(&ns, &wj.name_any()),
            generation,
            shown: std::sync::Mutex::new(status.phase),
            status: Mutex::new(status),
            cluster,
            bundle,
            ctx,
            wj,
            session: OnceLock::new(),
            pod_cidr: OnceLock::new(),
            node_name: known,
            changes: Mutex::default(),
            ready: Default::default(),
            owed_earlier: OnceLock::new(),
            saves: std::sync::Mutex::new(None),
        })
    }

    pub fn namespace(&self) -> String {
        self.wj.namespace().unwrap_or_default()
    }

    /// The SSH session (Connecting made it).
    pub fn session(&self) -> Result<&std::sync::Arc<Session>> {
        self.session
            .get()
            .ok_or_else(|| Error::Internal("a phase ran before Connecting".into()))
    }

    pub fn set_session(&self, session: Session) {
        let _ = self.session.set(std::sync::Arc::new(session));
    }

    /// Restarts owed by an earlier pass that stopped before Starting:
    /// read beside preflight when it ran, else now.
    pub async fn owed_earlier(&self) -> Result<BTreeSet<Unit>> {
        match self.owed_earlier.get() {
            Some(owed) => Ok(owed.clone()),
            None => pending::take(self.session()?).await,
        }
    }

    pub fn set_owed_earlier(&self, owed: BTreeSet<Unit>) {
        let _ = self.owed_earlier.set(owed);
    }

    pub fn pod_cidr(&self) -> Option<&str> {
        self.pod_cidr.get().map(String::as_str)
    }

    pub fn set_pod_cidr(&self, cidr: String) {
        let _ = self.pod_cidr.set(cidr);
    }

    /// The Node name, once known (spec, status, or the host's hostname).
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.get().map(String::as_str)
    }

    pub fn known_node_name(&self) -> Result<&str> {
        self.node_name().ok_or_else(|| {
            Error::InvalidHostName("the host reports no hostname: set spec.nodeName".into())
        })
    }

    pub fn set_node_name(&self, name: String) {
        let _ = self.node_name.set(name);
    }

    pub fn mark_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Close the session (after the walk).
    pub async fn close(&self) {
        if let Some(s) = self.session.get() {
            s.close().await;
        }
    }

    /// What the worker's files are rendered from.
    pub fn input(&self, node_name: &str) -> NodeInput {
        node_input(&self.cluster, &self.wj.spec, node_name, &self.bundle.1)
    }

    /// Upstream eviction thresholds unless the cluster asks for relaxed
    /// ones (the sandbox's small disks).
    pub fn eviction(&self) -> configs::Eviction {
        configs::Eviction::from_spec(&self.cluster.spec.kubelet)
    }

    /// Change the status (not saved yet).
    pub async fn with_status<T>(&self, f: impl FnOnce(&mut WorkerJoinStatus) -> T) -> T {
        f(&mut *self.status.lock().await)
    }

    /// Set one condition (not saved yet).
    pub async fn condition(
        &self,
        t: WorkerJoinCondition,
        v: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        let generation = self.generation;
        let message = message.into();
        self.with_status(|s| status::set(s, t.as_str(), v, reason, message, generation))
            .await;
    }

    /// Server-side apply of the whole status, one field manager, done when
    /// the API answered (after every save queued before it).
    pub async fn save(&self) -> Result<()> {
        let mut st = self.status.lock().await;
        let Some(queue) = self.queue() else {
            return save_status(self.ctx, self.wj, &mut st, self.generation).await;
        };
        let mut w = Writes::none();
        w.status = Some(st.clone());
        let (done, outcome) = tokio::sync::oneshot::channel();
        queue
            .send((w, Some(done)))
            .map_err(|_| Error::Internal("the status queue closed during a walk".into()))?;
        drop(st);
        outcome
            .await
            .unwrap_or_else(|_| Err(Error::Internal("a queued status save was dropped".into())))
    }

    /// Start queueing saves for a walk; [`Join::drain_saves`] writes them.
    pub fn queue_saves(&self) -> tokio::sync::mpsc::UnboundedReceiver<Queued> {
        let (queue, saves) = tokio::sync::mpsc::unbounded_channel();
        *self.saves_slot() = Some(queue);
        saves
    }

    /// The walk is over: saves go straight to the API again, and
    /// [`Join::drain_saves`] ends once it wrote what was queued.
    pub fn end_saves(&self) {
        self.saves_slot().take();
    }

    /// Write the queued saves in order (status first, then its Events),
    /// until [`Join::end_saves`]. A failed progress save is logged: the
    /// walk goes on, and the reconcile's own write after it reports an
    /// API that stays unwritable.
    pub async fn drain_saves(&self, mut saves: tokio::sync::mpsc::UnboundedReceiver<Queued>) {
        while let Some((w, done)) = saves.recv().await {
            let written = write::write(self.ctx, self.wj, &self.owner, w)
                .await
                .map(|_| ());
            match done {
                Some(done) => {
                    let _ = done.send(written);
                }
                None => {
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "saving the join's progress failed");
                    }
                }
            }
        }
    }

    fn queue(&self) -> Option<SaveQueue> {
        self.saves_slot().clone()
    }

    fn saves_slot(&self) -> std::sync::MutexGuard<'_, Option<SaveQueue>> {
        self.saves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The status as the walk left it.
    pub async fn into_status(self) -> WorkerJoinStatus {
        self.status.into_inner()
    }

    /// Merge a phase's changes; with `record`, the restarts now owed are
    /// written on the host before the lock is let go.
    pub async fn merge_changes(&self, c: Changes, record: bool) -> Result<()> {
        let mut changes = self.changes.lock().await;
        changes.merge(c);
        if record {
            pending::record(self.session()?, &changes.restart).await?;
        }
        Ok(())
    }

    pub async fn owe_restart(&self, units: impl IntoIterator<Item = Unit>) -> Result<()> {
        let c = Changes {
            restart: units.into_iter().collect(),
            ..Default::default()
        };
        self.merge_changes(c, true).await
    }

    /// The restarts owed and whether unit files changed.
    /// `unit` was started with the files and binaries now in place (see
    /// `converge::start_if_idle`): it owes no restart for what changed
    /// before (a change merged later owes one again).
    pub async fn started_early(&self, unit: Unit) {
        self.changes.lock().await.restart.remove(&unit);
    }

    pub async fn restarts(&self) -> (BTreeSet<Unit>, bool) {
        let c = self.changes.lock().await;
        (c.restart.clone(), c.units_changed)
    }

    /// Record where the join stands: the phase saved as its work starts
    /// (queued during a walk), an Event when it changed.
    /// Phases starting beside one already recorded save nothing: the
    /// recorded phase is where a resume starts, and it did not move.
    async fn enter(&self, phase: Phase) -> Result<()> {
        let mut st = self.status.lock().await;
        let changed = {
            let mut shown = self
                .shown
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = *shown != phase;
            *shown = phase;
            changed
        };
        if !changed && st.phase == phase {
            return Ok(());
        }
        st.phase = phase;
        status::ensure_all(&mut st, self.generation);
        let mut w = Writes::none();
        w.status = Some(st.clone());
        if changed {
            tracing::info!(phase = phase.as_str(), "phase");
            w.events.push(Note {
                warning: false,
                reason: phase.as_str(),
                action: "Join",
                note: phase.describe().into(),
            });
        }
        // Queued (or, outside a walk, written) under the lock: saves never
        // overtake each other. The phase's work starts meanwhile: a status
        // that lags is safe, as a resume from it only redoes finished
        // (idempotent) phases.
        match self.queue() {
            Some(queue) => {
                let _ = queue.send((w, None));
            }
            None => {
                write::write(self.ctx, self.wj, &self.owner, w).await?;
            }
        }
        drop(st);
        Ok(())
    }

    async fn finished(&self, phase: Phase, elapsed: std::time::Duration) {
        let secs = seconds(elapsed);
        self.with_status(|s| s.phase_durations.insert(phase.as_str().into(), secs))
            .await;
        self.ctx.metrics.observe_phase(phase.as_str(), secs);
    }
}

/// Progress of a join: the phase a resume would start at is the status
/// phase, saved as work starts (never ahead of it); each phase's duration
/// on its end.
impl Progress<Phase, Error> for Join<'_> {
    fn event<'e>(&'e self, e: Event<'e, Phase>) -> BoxFuture<'e, Result<()>> {
        async move {
            match e.step {
                Step::Started => self.enter(e.frontier.unwrap_or(e.phase)).await,
                Step::Done { elapsed, .. } => {
                    self.finished(e.phase, elapsed).await;
                    // The phases beside it may still run: the recorded phase
                    // moves only when the first unfinished one did.
                    match e.frontier {
                        Some(next) => self.enter(next).await,
                        None => Ok(()),
                    }
                }
                Step::Skipped | Step::Planned { .. } | Step::Failed { .. } => Ok(()),
            }
        }
        .boxed()
    }
}

/// Server-side apply of a WorkerJoin's whole status, one field manager.
pub async fn save_status(
    ctx: &Context,
    wj: &WorkerJoin,
    st: &mut WorkerJoinStatus,
    generation: i64,
) -> Result<()> {
    status::ensure_all(st, generation);
    let api: Api<WorkerJoin> =
        Api::namespaced(ctx.client.clone(), &wj.namespace().unwrap_or_default());
    api.patch_status(
        &wj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(status::status_patch(st)),
    )
    .await
    .map_err(Error::kube(format!(
        "update the status of WorkerJoin {}/{}",
        wj.namespace().unwrap_or_default(),
        wj.name_any()
    )))?;
    Ok(())
}

/// The one `Cluster` object.
pub async fn read_cluster(client: &kube::Client) -> Result<Cluster> {
    let api: Api<Cluster> = Api::all(client.clone());
    let list = api
        .list(&Default::default())
        .await
        .map_err(Error::kube("list Cluster objects"))?;
    list.items.into_iter().next().ok_or(Error::NoCluster)
}

/// The cluster CA from the `kube-root-ca.crt` ConfigMap.
pub async fn cluster_ca(client: &kube::Client, namespace: &str) -> Result<String> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), namespace);
    let cm = api
        .get_opt("kube-root-ca.crt")
        .await
        .map_err(Error::kube(format!(
            "read ConfigMap {namespace}/kube-root-ca.crt"
        )))?;
    cm.and_then(|c| c.data)
        .and_then(|mut d| d.remove("ca.crt"))
        .ok_or_else(|| Error::Certificate {
            name: "cluster CA".into(),
            reason: format!(
                "ConfigMap {namespace}/kube-root-ca.crt has no ca.crt (is kube-controller-manager running with --root-ca-file?)"
            ),
        })
}

/// What the worker's files are rendered from.
pub fn node_input(
    cluster: &Cluster,
    spec: &kubeup_crds::WorkerJoinSpec,
    node_name: &str,
    manifest: &BundleManifest,
) -> NodeInput {
    let net = &cluster.spec.networking;
    NodeInput {
        node_name: node_name.to_string(),
        address: spec.address.clone(),
        kubernetes_version: manifest.kubernetes_version.clone(),
        // The worker's local load balancer spreads over every controller.
        api_backends: cluster
            .spec
            .controllers
            .iter()
            .map(|c| c.address.clone())
            .collect(),
        cluster_dns: net.cluster_dns.clone(),
        cluster_domain: net.domain.clone(),
        pod_cidr: net.pod_cidr.clone(),
        pause_image: kubeup_provision::hostplan::node::pause_image(manifest),
        register_taints: nodesync::register_taints(&spec.taints),
    }
}
