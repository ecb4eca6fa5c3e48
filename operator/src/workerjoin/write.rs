//! Write: what a reconcile records, as a pure function of the decision and
//! what its effects did ([`outcome`]), and the one place that saves the
//! status, publishes Events, counts metrics and remembers backoff
//! ([`write`]).

use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kubeup_crds::conditions::ConditionStatus;
use kubeup_crds::workerjoin::{Reason, WorkerJoinPhase as Phase, WorkerJoinStatus};
use kubeup_crds::{WorkerJoin, WorkerJoinCondition};

use crate::error::{Error, Result};
use crate::runtime::context::{Context, Memory};
use crate::workerjoin::decide::{self, Decision};
use crate::workerjoin::effects::{Done, Walk};
use crate::workerjoin::join::save_status;
use crate::workerjoin::observe::Observation;
use crate::workerjoin::status;

/// Steady-state resync of a joined node.
pub const RESYNC: Duration = Duration::from_secs(300);

/// An Event to publish on the WorkerJoin.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// A metric to count.
#[derive(Clone, Debug, PartialEq)]
pub enum Count {
    Succeeded { seconds: f64 },
    Failed { reason: &'static str },
    Ssh { category: &'static str },
}

/// Everything a reconcile records.
#[derive(Debug)]
pub struct Writes {
    /// The status to save, when it is to be saved.
    pub status: Option<WorkerJoinStatus>,
    pub events: Vec<Note>,
    pub counts: Vec<Count>,
    /// What to remember about the object (backoff, a blocked Secret).
    pub memory: Option<Memory>,
    pub action: Action,
}

impl Writes {
    /// Nothing to record (the caller fills in what it has).
    pub fn none() -> Self {
        Self::action(Action::await_change())
    }

    fn action(action: Action) -> Self {
        Self {
            status: None,
            events: vec![],
            counts: vec![],
            memory: None,
            action,
        }
    }
}

/// What to record for `decision` after `done`. `jitter` in [0, 1) spreads
/// the backoff; `now` is when the backoff starts.
pub fn outcome(
    decision: &Decision,
    done: Done,
    obs: &Observation,
    jitter: f64,
    now: Instant,
) -> Writes {
    let generation = obs.generation;
    match (decision, done) {
        (Decision::Refuse { reason, message }, _) => {
            let reason = *reason;
            let changed = obs.current.phase != Phase::Failed
                || obs.current.last_error.as_deref() != Some(message.as_str());
            // A duplicate may become the owner when the other goes away.
            let action = if matches!(reason, Reason::DuplicateAddress | Reason::NodeNameTaken) {
                Action::requeue(Duration::from_secs(60))
            } else {
                Action::await_change()
            };
            not_ready(
                obs,
                Phase::Failed,
                reason,
                message,
                changed,
                "Validate",
                action,
            )
        }
        (Decision::WaitForSecret { reason, message }, _) => {
            let reason = *reason;
            let changed = obs.current.last_error.as_deref() != Some(message.as_str());
            // The Secret watch brings us back; the requeue is a safety net.
            let action = Action::requeue(Duration::from_secs(60));
            not_ready(
                obs,
                Phase::Connecting,
                reason,
                message,
                changed,
                "ReadSecret",
                action,
            )
        }
        (Decision::Blocked, _) => Writes::action(Action::await_change()),
        (Decision::Backoff(left), _) => Writes::action(Action::requeue(*left)),
        (
            _,
            Done::Synced {
                status,
                again,
                renew_error,
            },
        ) => {
            let mut w = Writes::action(Action::requeue(RESYNC.min(again)));
            if *status != obs.current {
                w.status = Some(*status);
            }
            if let Some(e) = renew_error {
                w.counts
                    .extend(e.ssh_category().map(|category| Count::Ssh { category }));
                w.events.push(Note {
                    warning: true,
                    reason: "CredentialRenewalFailed",
                    action: "RenewCredentials",
                    note: format!(
                        "{e}; retrying in {}s (the node's tokens stay valid until they expire)",
                        again.as_secs()
                    ),
                });
            }
            w
        }
        (
            _,
            Done::Walked {
                status,
                result,
                elapsed,
            },
        ) => walked(*status, result, elapsed, obs, jitter, now),
        // InSync/Join/DryRun always come with what they did.
        (_, Done::Nothing) => Writes::action(Action::requeue(Duration::from_secs(5))),
    }
    .with_generation(generation)
}

impl Writes {
    /// Every saved status names the generation it describes.
    fn with_generation(mut self, generation: i64) -> Self {
        if let Some(s) = &mut self.status {
            s.observed_generation = Some(generation);
        }
        self
    }
}

/// A join that cannot go on for now: the phase it stops in, the message
/// as `lastError`, `Ready=False` with the reason; an Event when it changed.
fn not_ready(
    obs: &Observation,
    phase: Phase,
    reason: Reason,
    message: &str,
    changed: bool,
    action_name: &'static str,
    action: Action,
) -> Writes {
    let mut st = obs.current.clone();
    st.phase = phase;
    st.last_error = Some(message.to_string());
    status::set(
        &mut st,
        WorkerJoinCondition::Ready.as_str(),
        ConditionStatus::False,
        reason.as_str(),
        message.to_string(),
        obs.generation,
    );
    let mut w = Writes::action(action);
    w.status = Some(st);
    if changed {
        w.events.push(Note {
            warning: true,
            reason: reason.as_str(),
            action: action_name,
            note: message.into(),
        });
    }
    w
}

fn walked(
    mut st: WorkerJoinStatus,
    result: Result<Walk>,
    elapsed: Duration,
    obs: &Observation,
    jitter: f64,
    now: Instant,
) -> Writes {
    let walk = match result {
        Ok(walk) => walk,
        Err(e) => return failed(st, &e, obs, jitter, now),
    };
    st.attempts = 0;
    st.last_error = None;
    let mut w = Writes::action(Action::await_change());
    w.memory = Some(Memory::default());
    match walk {
        Walk::Ready { node } => {
            st.phase = Phase::Ready;
            status::apply_node_conditions(&mut st, node.as_ref(), obs.generation);
            w.counts.push(Count::Succeeded {
                seconds: elapsed.as_secs_f64(),
            });
            w.events.push(Note {
                warning: false,
                reason: "Ready",
                action: "Join",
                note: format!(
                    "Node {} is Ready ({:.1}s)",
                    st.node_name.clone().unwrap_or_default(),
                    elapsed.as_secs_f64()
                ),
            });
            w.action = Action::requeue(RESYNC);
        }
        Walk::NotReadyYet => w.action = Action::requeue(Duration::from_secs(10)),
        Walk::DryRun { planned } => {
            st.phase = Phase::DryRunComplete;
            w.events.push(Note {
                warning: false,
                reason: "DryRunComplete",
                action: "DryRun",
                note: format!(
                    "checks passed on {}; {} actions planned, nothing changed",
                    obs.host,
                    planned.len()
                ),
            });
            st.planned_actions = planned;
        }
    }
    w.status = Some(st);
    w
}

/// A failed attempt: attempts, lastError, `Ready=False` with the error's
/// reason, an Event; back off, or for a permanent error stop and wait for a
/// change (of the object or its Secret).
fn failed(
    mut st: WorkerJoinStatus,
    e: &Error,
    obs: &Observation,
    jitter: f64,
    now: Instant,
) -> Writes {
    let reason = e.category();
    let message = e.to_string();
    if st.observed_generation != Some(obs.generation) {
        st.attempts = 0;
    }
    st.attempts += 1;
    st.last_error = Some(message.clone());
    if e.is_permanent() {
        st.phase = Phase::Failed;
    }
    status::set(
        &mut st,
        WorkerJoinCondition::Ready.as_str(),
        ConditionStatus::False,
        reason,
        message.clone(),
        obs.generation,
    );
    let mut w = Writes::action(Action::await_change());
    w.counts.push(Count::Failed { reason });
    w.counts
        .extend(e.ssh_category().map(|category| Count::Ssh { category }));
    w.events.push(Note {
        warning: true,
        reason,
        action: "Join",
        note: message,
    });
    if e.is_permanent() {
        w.memory = Some(Memory {
            next_attempt: None,
            blocked_secret_rv: obs.secret_rv.clone(),
        });
    } else {
        let wait = decide::backoff(st.attempts, jitter);
        w.memory = Some(Memory {
            next_attempt: Some(now + wait),
            blocked_secret_rv: None,
        });
        w.action = Action::requeue(wait);
    }
    w.status = Some(st);
    w
}

/// Record it all: status first (the Event must not announce what status
/// does not show), then Events, metrics and memory.
pub async fn write(ctx: &Context, wj: &WorkerJoin, key: &str, w: Writes) -> Result<Action> {
    if let Some(mut st) = w.status {
        let generation = wj.metadata.generation.unwrap_or(0);
        save_status(ctx, wj, &mut st, generation).await?;
    }
    for n in w.events {
        ctx.event(wj, n.warning, n.reason, n.action, n.note).await;
    }
    for c in w.counts {
        match c {
            Count::Succeeded { seconds } => {
                ctx.metrics.joins_succeeded.inc();
                ctx.metrics.join_duration.observe(seconds);
            }
            Count::Failed { reason } => {
                tracing::warn!(reason, "join attempt failed");
                ctx.metrics.join_failed(reason);
            }
            Count::Ssh { category } => ctx.metrics.ssh_error(category),
        }
    }
    if let Some(m) = w.memory {
        ctx.set_memory(key, m);
    }
    Ok(w.action)
}

#[cfg(test)]
mod tests;
