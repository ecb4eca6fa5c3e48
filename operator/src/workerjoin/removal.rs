//! Delete, as a procedure on the phase engine: drain → reset the machine
//! over SSH (its kubelet stops before its Node goes, or it would register
//! the Node again) → delete the Node. Any failure keeps the finalizer, with
//! the reason in status and an Event; the skip-host-cleanup annotation is
//! the one way out.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::ResourceExt;
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::{Reason, WorkerJoinPhase as Phase};
use kubeup_provision::phase::{self as engine, Event, Live, PhaseKey, Procedure, Progress, Step};

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::cleanup::{delete_node, drain, reset, skip_host_cleanup, touched_host};
use crate::workerjoin::decide::{self, SKIP_HOST_CLEANUP};
use crate::workerjoin::knownhosts;
use crate::workerjoin::write::{self, Count, Note, Writes};

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
    fn note(&self, warning: bool, reason: &'static str, note: String) {
        self.notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Note {
                warning,
                reason,
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
            reason: Phase::Deleting.as_str(),
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
    // A reset stalled on a silent host is retried like a join's phase; a
    // drain has its own timeout inside, so the deadline leaves room for it.
    let deadline = ctx.settings.phase_timeout + ctx.settings.drain_timeout;
    let walked = procedure(&wj.spec.address)
        .with_deadline(deadline, Error::phase_timeout)
        .apply(&r, &Logged, None)
        .await;
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
                Reason::CleanupFailed.as_str(),
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
