//! Walking a procedure: phases in list order, each started as soon as
//! what it depends on is done.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{Effect, Event, Failed, Live, Outcome, Phase, PhaseKey, Progress, Report, Step};

/// One flow: its phases in order, on one host.
pub struct Procedure<'p, C: ?Sized, K: PhaseKey, E> {
    host: String,
    phases: Vec<&'p dyn Phase<C, K, E>>,
    deadline: Option<Deadline<K, E>>,
}

/// How long one phase may take, and the error it fails with after that.
struct Deadline<K, E> {
    after: Duration,
    timed_out: fn(K, Duration) -> E,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
    /// Failed: not done (the frontier stays here, nothing after it starts).
    Failed,
}

/// Whether a walk changes anything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    DryRun,
}

impl<'p, C: ?Sized + Sync, K: PhaseKey, E: std::fmt::Display + Send> Procedure<'p, C, K, E> {
    pub fn new(host: impl Into<String>, phases: Vec<&'p dyn Phase<C, K, E>>) -> Self {
        Self {
            host: host.into(),
            phases,
            deadline: None,
        }
    }

    /// Every phase fails with `timed_out(phase, after)` once it has run for
    /// `after`: a host or connection that stops answering ends the walk
    /// with an error that names the phase, instead of hanging it. The
    /// phase's future is dropped there; its flow must be safe to resume
    /// (uploads are atomic, steps idempotent).
    pub fn with_deadline(mut self, after: Duration, timed_out: fn(K, Duration) -> E) -> Self {
        self.deadline = Some(Deadline { after, timed_out });
        self
    }

    /// The phases' keys in list order (what the docs and `--help` show).
    pub fn keys(&self) -> Vec<K> {
        self.phases.iter().map(|p| p.key()).collect()
    }

    /// The phases with their titles, in list order.
    pub fn titles(&self) -> Vec<(K, &'static str)> {
        self.phases.iter().map(|p| (p.key(), p.title())).collect()
    }

    /// Do it, resuming at `from` when given (phases listed before it are
    /// skipped unless they say they are needed anyway).
    pub async fn apply(
        &self,
        ctx: &C,
        progress: &dyn Progress<K, E>,
        from: Option<K>,
    ) -> Result<Report<K>, Failed<K, E>> {
        self.walk(ctx, progress, from, Mode::Apply).await
    }

    /// Observe and plan, change nothing: the same phases, the same order.
    pub async fn dry_run(
        &self,
        ctx: &C,
        progress: &dyn Progress<K, E>,
    ) -> Result<Report<K>, Failed<K, E>> {
        self.walk(ctx, progress, None, Mode::DryRun).await
    }

    /// [`Self::dry_run`] when `dry_run` (a command's `plan`), else
    /// [`Self::apply`] from the start.
    pub async fn apply_or_plan(
        &self,
        ctx: &C,
        progress: &dyn Progress<K, E>,
        dry_run: bool,
    ) -> Result<Report<K>, Failed<K, E>> {
        let mode = if dry_run { Mode::DryRun } else { Mode::Apply };
        self.walk(ctx, progress, None, mode).await
    }

    /// Indices of the phases `i` waits for. Keys not in the list are
    /// ignored (a dependency on a phase this flow does not have).
    fn deps(&self, i: usize) -> Vec<usize> {
        let Some(phase) = self.phases.get(i) else {
            return vec![];
        };
        match phase.after() {
            None => i.checked_sub(1).into_iter().collect(),
            Some(keys) => keys
                .iter()
                .filter_map(|k| self.phases.iter().position(|p| p.key() == *k))
                .filter(|&d| d != i)
                .collect(),
        }
    }

    async fn walk(
        &self,
        ctx: &C,
        progress: &dyn Progress<K, E>,
        from: Option<K>,
        mode: Mode,
    ) -> Result<Report<K>, Failed<K, E>> {
        let from_index = from.and_then(|k| self.phases.iter().position(|p| p.key() == k));
        let deps: Vec<Vec<usize>> = (0..self.phases.len()).map(|i| self.deps(i)).collect();
        let mut state = vec![State::Waiting; self.phases.len()];
        let mut outcomes: Vec<Option<Outcome>> = vec![None; self.phases.len()];
        // Live is made here once; a dry run lends it to observing phases only.
        let live = Live(());
        let mut running = FuturesUnordered::new();
        let mut first_error: Option<(K, E)> = None;

        loop {
            // Start everything whose dependencies are done (a skip may free
            // more, so look again until nothing changes).
            let mut started_any = true;
            while first_error.is_none() && started_any {
                started_any = false;
                for (i, phase) in self.phases.iter().enumerate() {
                    let ready = state.get(i) == Some(&State::Waiting)
                        && deps
                            .get(i)
                            .is_some_and(|d| d.iter().all(|&j| state.get(j) == Some(&State::Done)));
                    if !ready || first_error.is_some() {
                        continue;
                    }
                    started_any = true;
                    let resumed_past = from_index.is_some_and(|f| i < f);
                    let needed = match mode {
                        Mode::Apply => phase.needed(ctx, resumed_past),
                        Mode::DryRun => phase.needed(ctx, false),
                    };
                    if !needed {
                        set(&mut state, i, State::Done);
                        set(&mut outcomes, i, Some(Outcome::Skipped));
                        let ev = self.event(*phase, Step::Skipped, &state, from_index);
                        if let Err(e) = progress.event(ev).await {
                            first_error = Some((phase.key(), e));
                        }
                        continue;
                    }
                    set(&mut state, i, State::Running);
                    let ev = self.event(*phase, Step::Started, &state, from_index);
                    if let Err(e) = progress.event(ev).await {
                        set(&mut state, i, State::Failed);
                        first_error = Some((phase.key(), e));
                        continue;
                    }
                    let live = &live;
                    let deadline = self.deadline.as_ref();
                    running.push(async move {
                        let started = Instant::now();
                        let work = async {
                            match (mode, phase.effect()) {
                                (Mode::Apply, _) | (Mode::DryRun, Effect::Observe) => {
                                    phase.run(ctx, live).await.map(Ran::Detail)
                                }
                                (Mode::DryRun, Effect::Change) => {
                                    phase.plan(ctx).await.map(Ran::Plan)
                                }
                            }
                        };
                        let result = match deadline {
                            None => work.await,
                            Some(d) => tokio::time::timeout(d.after, work)
                                .await
                                .unwrap_or_else(|_| Err((d.timed_out)(phase.key(), d.after))),
                        };
                        (i, result, started.elapsed())
                    });
                }
            }
            let Some((i, result, elapsed)) = running.next().await else {
                break;
            };
            let Some(phase) = self.phases.get(i).copied() else {
                continue;
            };
            match result {
                Ok(ran) => {
                    set(&mut state, i, State::Done);
                    let outcome = match ran {
                        Ran::Detail(detail) => Outcome::Ran { detail, elapsed },
                        Ran::Plan(actions) => Outcome::Planned(actions),
                    };
                    let step = match &outcome {
                        Outcome::Ran { detail, elapsed } => Step::Done {
                            detail,
                            elapsed: *elapsed,
                        },
                        Outcome::Planned(actions) => Step::Planned { actions },
                        Outcome::Skipped => Step::Skipped,
                    };
                    let sent = progress
                        .event(self.event(phase, step, &state, from_index))
                        .await;
                    set(&mut outcomes, i, Some(outcome));
                    if let Err(e) = sent
                        && first_error.is_none()
                    {
                        first_error = Some((phase.key(), e));
                    }
                }
                Err(e) => {
                    set(&mut state, i, State::Failed);
                    let text = e.to_string();
                    let step = Step::Failed {
                        error: &text,
                        elapsed,
                    };
                    // The phase's own error is the one to report, whatever
                    // the sink says.
                    let _ = progress
                        .event(self.event(phase, step, &state, from_index))
                        .await;
                    if first_error.is_none() {
                        first_error = Some((phase.key(), e));
                    }
                }
            }
        }
        if let Some((phase, error)) = first_error {
            return Err(Failed {
                phase,
                host: self.host.clone(),
                error,
            });
        }
        Ok(Report {
            phases: self
                .phases
                .iter()
                .zip(outcomes)
                .map(|(p, o)| (p.key(), o.unwrap_or(Outcome::Skipped)))
                .collect(),
        })
    }

    /// `from_index`: phases listed before it were done by an earlier walk,
    /// even when they run again now (connecting), so the frontier never
    /// goes back behind it.
    fn event<'a>(
        &'a self,
        phase: &dyn Phase<C, K, E>,
        step: Step<'a>,
        state: &[State],
        from_index: Option<usize>,
    ) -> Event<'a, K> {
        let earlier = |i: usize| from_index.is_some_and(|f| i < f);
        Event {
            host: &self.host,
            phase: phase.key(),
            title: phase.title(),
            step,
            frontier: state
                .iter()
                .enumerate()
                .position(|(i, s)| *s != State::Done && !earlier(i))
                .and_then(|i| self.phases.get(i))
                .map(|p| p.key()),
        }
    }
}

enum Ran {
    Detail(String),
    Plan(Vec<String>),
}

fn set<T>(v: &mut [T], i: usize, value: T) {
    if let Some(slot) = v.get_mut(i) {
        *slot = value;
    }
}

/// Seconds with millisecond precision, as status and metrics record them.
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
