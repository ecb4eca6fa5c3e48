//! Effects: what a decision does beyond this process — a join or dry run
//! (the phase procedure over SSH and the API), or the steady-state sync of
//! a joined node. What to record of it is [`super::write`]'s.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::{WorkerJoinPhase as Phase, WorkerJoinStatus};

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::decide::{Decision, NodeView};
use crate::workerjoin::join::Join;
use crate::workerjoin::observe::Observation;
use crate::workerjoin::{apiservers, node, nodetoken, phases, status};

/// What the effects did.
pub enum Done {
    /// The decision needs no work: what to write follows from it alone.
    Nothing,
    /// A join or dry run walked its phases; the status as it left it.
    Walked {
        status: Box<WorkerJoinStatus>,
        result: Result<Walk>,
        elapsed: Duration,
    },
    /// In sync: the Node's labels and taints kept, the tokens renewed when
    /// due; look again after `again`.
    Synced {
        status: Box<WorkerJoinStatus>,
        again: Duration,
        /// Renewing the node's credentials failed (the node keeps working
        /// on its current ones meanwhile).
        renew_error: Option<Error>,
    },
}

/// How a walk that did not fail ended.
pub enum Walk {
    Ready {
        node: Option<NodeView>,
    },
    /// The Node is not there or not Ready yet: look again soon.
    NotReadyYet,
    DryRun {
        planned: Vec<String>,
    },
}

pub async fn perform(
    ctx: &Context,
    wj: &WorkerJoin,
    decision: &Decision,
    obs: &Observation,
) -> Result<Done> {
    match decision {
        Decision::Refuse { .. }
        | Decision::WaitForSecret { .. }
        | Decision::Blocked
        | Decision::Backoff(_) => Ok(Done::Nothing),
        Decision::InSync => sync(ctx, wj, obs).await,
        Decision::Join { from } => Ok(walk(ctx, wj, Some(*from)).await),
        Decision::DryRun => Ok(walk(ctx, wj, None).await),
    }
}

/// The join (`from` a recorded phase) or, without `from`, the dry run.
async fn walk(ctx: &Context, wj: &WorkerJoin, from: Option<Phase>) -> Done {
    ctx.metrics.joins_started.inc();
    ctx.metrics.joins_in_flight.inc();
    let started = Instant::now();
    let (status, result) = match Join::new(ctx, wj).await {
        Ok(join) => {
            let procedure = phases::procedure(&wj.spec.address)
                .with_deadline(ctx.settings.phase_timeout, Error::phase_timeout);
            // Progress is saved beside the phases; every save is written
            // before the reconcile's own final write.
            let saves = join.queue_saves();
            let walking = async {
                let walked = match from {
                    Some(from) => procedure.apply(&join, &join, Some(from)).await,
                    None => procedure.dry_run(&join, &join).await,
                };
                join.end_saves();
                walked
            };
            let (walked, ()) = tokio::join!(walking, join.drain_saves(saves));
            join.close().await;
            let ready = join.is_ready();
            let status = join.into_status().await;
            let result = match walked {
                // Each line says its phase: the dry run's phases (these and
                // the ones it ran) are the real join's.
                Ok(report) if from.is_none() => Ok(Walk::DryRun {
                    planned: report
                        .planned_by_phase()
                        .into_iter()
                        .map(|(phase, line)| format!("{}: {line}", phase.as_str()))
                        .collect(),
                }),
                Ok(_) if ready => Ok(Walk::Ready {
                    node: fresh_node(ctx, status.node_name.as_deref()).await,
                }),
                Ok(_) => Ok(Walk::NotReadyYet),
                Err(failed) => {
                    tracing::warn!(phase = failed.phase.as_str(), host = %failed.host, "phase failed");
                    Err(failed.error)
                }
            };
            (status, result)
        }
        Err(e) => (wj.status.clone().unwrap_or_default(), Err(e)),
    };
    ctx.metrics.joins_in_flight.dec();
    Done::Walked {
        status: Box::new(status),
        result,
        elapsed: started.elapsed(),
    }
}

/// The Node as it is now (for the Ready conditions after a join).
async fn fresh_node(ctx: &Context, name: Option<&str>) -> Option<NodeView> {
    let name = name?;
    Api::<Node>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .map(|n| node::node_view(&n))
}

/// Steady state: labels and taints to the spec, conditions from the Node,
/// the Node-bound tokens renewed when due (SSH only then).
async fn sync(ctx: &Context, wj: &WorkerJoin, obs: &Observation) -> Result<Done> {
    // decide() says InSync only with a Node; without one, look again soon.
    let Some(n) = &obs.node else {
        return Ok(Done::Synced {
            status: Box::new(obs.current.clone()),
            again: Duration::from_secs(5),
            renew_error: None,
        });
    };
    node::sync_node(&ctx.client, n, &obs.key, wj).await?;
    let mut current = obs.current.clone();
    status::apply_node_conditions(&mut current, Some(&node::node_view(n)), obs.generation);
    // Controllers added or removed: the machine's load balancer follows.
    if let Err(e) = apiservers::keep_current(ctx, wj, &mut current).await {
        // Soon again: until it is written, the machine's kubelet may lean
        // on a controller that is leaving.
        return Ok(Done::Synced {
            status: Box::new(current),
            again: apiservers::RETRY,
            renew_error: Some(e),
        });
    }
    if let Some(left) = nodetoken::renewal_due_in(&current) {
        return Ok(Done::Synced {
            status: Box::new(current),
            again: left,
            renew_error: None,
        });
    }
    let join = match Join::new(ctx, wj).await {
        Ok(join) => join,
        Err(e) => {
            return Ok(Done::Synced {
                status: Box::new(current),
                again: nodetoken::RENEW_RETRY,
                renew_error: Some(e),
            });
        }
    };
    join.with_status(|s| *s = current).await;
    let renewed = nodetoken::renew(&join).await;
    let status = join.into_status().await;
    let (again, renew_error) = match renewed {
        Ok(()) => (
            nodetoken::renewal_due_in(&status).unwrap_or(nodetoken::RENEW_RETRY),
            None,
        ),
        Err(e) => (nodetoken::RENEW_RETRY, Some(e)),
    };
    Ok(Done::Synced {
        status: Box::new(status),
        again,
        renew_error,
    })
}
