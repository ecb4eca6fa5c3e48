//! The phase engine: every flow over SSH (`kubeup up`, `plan`, `reset`, the
//! operator's join and cleanup) is one ordered list of phases, visible on
//! one screen where the flow is defined, walked by [`Procedure`].
//!
//! A phase is a small type: a key and a title, whether it is needed (from
//! what is observed and whether a resume has passed it), what it would do
//! ([`Phase::plan`], which *is* the dry-run and `kubeup plan` output) and
//! doing it ([`Phase::run`]). Doing it takes a [`Live`] token that only
//! [`Procedure::apply`] makes; a dry run makes one only for phases that
//! merely look ([`Effect::Observe`]), so no dry run reaches a change.
//!
//! Phases run as soon as the phases they depend on are done ([`Phase::after`];
//! by default the one listed before), so independent work overlaps — the
//! join writes its configuration and gets its certificate while the
//! binaries stream. The first error stops the walk: no new phase starts,
//! the ones running finish, and every phase that started gets an end event
//! ([`Progress`]), so a progress stream never ends on a bare "started".

mod walk;

#[cfg(test)]
mod tests;

use std::fmt::{self, Debug, Display};

use std::hash::Hash;
use std::time::Duration;

use futures::future::BoxFuture;

pub use walk::{Procedure, seconds};

/// The key of a phase: an enum of one flow's phases. Its name is what status,
/// metrics, JSON progress and the docs show.
pub trait PhaseKey: Copy + Eq + Hash + Debug + Send + Sync + 'static {
    fn name(self) -> &'static str;
}

/// Whether a phase changes anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It only looks (connect, preflight): a dry run runs it.
    Observe,
    /// It changes the host or the cluster: a dry run asks for its plan.
    Change,
}

/// Proof that the walk is a real one; [`Phase::run`] needs it. Only the
/// engine makes one (private field).
#[derive(Debug)]
pub struct Live(());

/// One step of a flow, over a context `C` shared by the flow's phases
/// (phases that run at once share it: what they hand on goes through
/// cells and locks in `C`).
pub trait Phase<C: ?Sized, K: PhaseKey, E>: Send + Sync {
    fn key(&self) -> K;
    /// What it does, as progress and the docs say it.
    fn title(&self) -> &'static str;
    fn effect(&self) -> Effect {
        Effect::Change
    }
    /// The phases that must be done before this one starts; `None`: the one
    /// listed before it.
    fn after(&self) -> Option<&'static [K]> {
        None
    }
    /// Whether it runs now; `resumed_past` when a resume starts after it.
    /// A skipped phase counts as done for the phases after it.
    fn needed(&self, ctx: &C, resumed_past: bool) -> bool {
        let _ = ctx;
        !resumed_past
    }
    /// What it would do, read-only (it may look at the host): the lines of
    /// a dry run or `kubeup plan`.
    fn plan<'a>(&'a self, ctx: &'a C) -> BoxFuture<'a, Result<Vec<String>, E>>;
    /// Do it; the detail for progress ("3 written", a fingerprint, …).
    fn run<'a>(&'a self, ctx: &'a C, live: &'a Live) -> BoxFuture<'a, Result<String, E>>;
}

/// What happened to a phase, as progress reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<'a> {
    Started,
    Done {
        detail: &'a str,
        elapsed: Duration,
    },
    /// Not needed (resumed past it, or nothing of it applies).
    Skipped,
    /// A dry run's plan for it.
    Planned {
        actions: &'a [String],
    },
    Failed {
        error: &'a str,
        elapsed: Duration,
    },
}

/// One progress event.
#[derive(Clone, Debug)]
pub struct Event<'a, K> {
    pub host: &'a str,
    pub phase: K,
    pub title: &'static str,
    pub step: Step<'a>,
    /// The first phase (in list order) not done yet: where a resume starts.
    pub frontier: Option<K>,
}

/// Where progress goes: spinners or lines or JSON (CLI), status, Events and
/// metrics (operator). A sink's error (status could not be saved) stops
/// the walk like a phase's.
pub trait Progress<K, E>: Send + Sync {
    fn event<'a>(&'a self, event: Event<'a, K>) -> BoxFuture<'a, Result<(), E>>;
}

/// How a phase ended in a finished walk.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ran { detail: String, elapsed: Duration },
    Skipped,
    Planned(Vec<String>),
}

/// A finished walk: each phase in list order with how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Report<K> {
    pub phases: Vec<(K, Outcome)>,
}

impl<K: PhaseKey> Report<K> {
    /// The phases a walk went through (ran or planned), in list order.
    pub fn walked(&self) -> Vec<K> {
        self.phases
            .iter()
            .filter(|(_, o)| !matches!(o, Outcome::Skipped))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Every planned action with its phase, in order.
    pub fn planned_by_phase(&self) -> Vec<(K, String)> {
        self.phases
            .iter()
            .flat_map(|(k, o)| match o {
                Outcome::Planned(a) => a.iter().map(|line| (*k, line.clone())).collect(),
                _ => vec![],
            })
            .collect()
    }

    /// Every planned action, in order.
    pub fn planned(&self) -> Vec<String> {
        self.phases
            .iter()
            .flat_map(|(_, o)| match o {
                Outcome::Planned(a) => a.clone(),
                _ => vec![],
            })
            .collect()
    }

    /// Seconds each phase that ran took, by phase name.
    pub fn durations(&self) -> Vec<(&'static str, f64)> {
        self.phases
            .iter()
            .filter_map(|(k, o)| match o {
                Outcome::Ran { elapsed, .. } => Some((k.name(), elapsed.as_secs_f64())),
                _ => None,
            })
            .collect()
    }
}

/// A walk stopped at a phase's error (the first one, when several ran at once).
#[derive(Debug)]
pub struct Failed<K, E> {
    pub phase: K,
    pub host: String,
    pub error: E,
}

/// "phase on host"; the error itself is the source (`{:#}` in anyhow shows
/// both).
impl<K: PhaseKey, E> Display for Failed<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.phase.name(), self.host)
    }
}

impl<K: PhaseKey, E: std::error::Error + 'static> std::error::Error for Failed<K, E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A join's phases are the WorkerJoin's status phases.
impl PhaseKey for kubeup_crds::WorkerJoinPhase {
    fn name(self) -> &'static str {
        self.as_str()
    }
}
