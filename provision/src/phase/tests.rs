//! The engine on a toy flow: order, overlap, resume, errors, dry runs.

use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum K {
    Look,
    Bytes,
    Certs,
    Start,
}

impl PhaseKey for K {
    fn name(self) -> &'static str {
        match self {
            K::Look => "Look",
            K::Bytes => "Bytes",
            K::Certs => "Certs",
            K::Start => "Start",
        }
    }
}

#[derive(Default)]
struct Ctx {
    log: Mutex<Vec<String>>,
    fail: Option<K>,
}

impl Ctx {
    fn push(&self, s: String) {
        if let Ok(mut l) = self.log.lock() {
            l.push(s);
        }
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

struct Toy {
    key: K,
    effect: Effect,
    after: Option<&'static [K]>,
    /// How long it works (yields to the others meanwhile).
    ms: u64,
}

impl Phase<Ctx, K, String> for Toy {
    fn key(&self) -> K {
        self.key
    }
    fn title(&self) -> &'static str {
        "toy"
    }
    fn effect(&self) -> Effect {
        self.effect
    }
    fn after(&self) -> Option<&'static [K]> {
        self.after
    }
    fn needed(&self, _: &Ctx, resumed_past: bool) -> bool {
        // Looking is always needed (like connecting).
        self.key == K::Look || !resumed_past
    }
    fn plan<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Result<Vec<String>, String>> {
        async move {
            ctx.push(format!("plan {:?}", self.key));
            Ok(vec![format!("would {:?}", self.key)])
        }
        .boxed()
    }
    fn run<'a>(&'a self, ctx: &'a Ctx, _: &'a Live) -> BoxFuture<'a, Result<String, String>> {
        async move {
            ctx.push(format!("begin {:?}", self.key));
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
            if ctx.fail == Some(self.key) {
                return Err(format!("{:?} broke", self.key));
            }
            ctx.push(format!("end {:?}", self.key));
            Ok(format!("{:?} done", self.key))
        }
        .boxed()
    }
}

/// Look → (Bytes ∥ Certs) → Start.
fn toys() -> Vec<Toy> {
    vec![
        Toy {
            key: K::Look,
            effect: Effect::Observe,
            after: None,
            ms: 1,
        },
        Toy {
            key: K::Bytes,
            effect: Effect::Change,
            after: Some(&[K::Look]),
            ms: 60,
        },
        Toy {
            key: K::Certs,
            effect: Effect::Change,
            after: Some(&[K::Look]),
            ms: 5,
        },
        Toy {
            key: K::Start,
            effect: Effect::Change,
            after: Some(&[K::Bytes, K::Certs]),
            ms: 1,
        },
    ]
}

fn procedure(toys: &[Toy]) -> Procedure<'_, Ctx, K, String> {
    Procedure::new(
        "host-1",
        toys.iter()
            .map(|t| t as &dyn Phase<Ctx, K, String>)
            .collect(),
    )
}

/// Every event as "Phase step frontier".
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Progress<K, String> for Recorder {
    fn event<'a>(&'a self, e: Event<'a, K>) -> BoxFuture<'a, Result<(), String>> {
        let step = match e.step {
            Step::Started => "started",
            Step::Done { .. } => "done",
            Step::Skipped => "skipped",
            Step::Planned { .. } => "planned",
            Step::Failed { .. } => "failed",
        };
        if let Ok(mut v) = self.0.lock() {
            v.push(format!("{:?} {step} {:?}", e.phase, e.frontier));
        }
        async { Ok(()) }.boxed()
    }
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[tokio::test]
async fn independent_phases_overlap_and_dependents_wait_for_all() {
    let toys = toys();
    let ctx = Ctx::default();
    let rec = Recorder::default();
    let report = procedure(&toys).apply(&ctx, &rec, None).await.unwrap();
    assert_eq!(report.walked(), vec![K::Look, K::Bytes, K::Certs, K::Start]);
    let log = ctx.log();
    let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
    // Certs began and ended while Bytes was still working.
    assert!(pos("begin Certs") < pos("end Bytes"), "{log:?}");
    assert!(pos("end Certs") < pos("end Bytes"), "{log:?}");
    // Start waited for both.
    assert!(pos("begin Start") > pos("end Bytes"), "{log:?}");
    // While Certs is done and Bytes runs, a resume would start at Bytes.
    let events = rec.events();
    assert!(
        events.contains(&"Certs done Some(Bytes)".to_string()),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap(), "Start done None");
}

#[tokio::test]
async fn a_resume_skips_what_is_done_but_keeps_what_is_always_needed() {
    let toys = toys();
    let ctx = Ctx::default();
    let rec = Recorder::default();
    let report = procedure(&toys)
        .apply(&ctx, &rec, Some(K::Certs))
        .await
        .unwrap();
    assert_eq!(report.walked(), vec![K::Look, K::Certs, K::Start]);
    assert_eq!(report.phases[1], (K::Bytes, Outcome::Skipped));
    // Looking again does not move the recorded phase back behind Certs.
    assert_eq!(rec.events()[0], "Look started Some(Certs)");
}

#[tokio::test]
async fn the_first_error_stops_the_walk_and_every_started_phase_ends() {
    let toys = toys();
    let ctx = Ctx {
        fail: Some(K::Certs),
        ..Default::default()
    };
    let rec = Recorder::default();
    let err = procedure(&toys).apply(&ctx, &rec, None).await.unwrap_err();
    assert_eq!(err.phase, K::Certs);
    assert_eq!(err.error, "Certs broke");
    assert_eq!(err.to_string(), "Certs on host-1");
    let events = rec.events();
    // Bytes was running: it finished and said so; Start never began.
    assert!(
        events.iter().any(|e| e.starts_with("Bytes done")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("Certs failed")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.starts_with("Start")), "{events:?}");
    // Bytes finished after Certs failed: a resume must still start at
    // Certs (a failed phase is not done), never past it.
    assert!(
        events.contains(&"Bytes done Some(Certs)".to_string()),
        "{events:?}"
    );
    let started = events.iter().filter(|e| e.contains(" started ")).count();
    let ended = events
        .iter()
        .filter(|e| e.contains(" done ") || e.contains(" failed "))
        .count();
    assert_eq!(started, ended, "{events:?}");
}

#[tokio::test]
async fn a_dry_run_looks_and_plans_the_same_phases_and_changes_nothing() {
    let toys = toys();
    let ctx = Ctx::default();
    let rec = Recorder::default();
    let dry = procedure(&toys).dry_run(&ctx, &rec).await.unwrap();
    let log = ctx.log();
    assert!(log.contains(&"end Look".to_string()), "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l.starts_with("begin") && l != "begin Look"),
        "a dry run ran a change: {log:?}"
    );
    assert_eq!(
        dry.planned(),
        vec!["would Bytes", "would Certs", "would Start"]
    );
    let real = procedure(&toys)
        .apply(&Ctx::default(), &Recorder::default(), None)
        .await
        .unwrap();
    assert_eq!(dry.walked(), real.walked());
}

/// A sink that cannot record (status not saved) stops the walk there.
struct Refusing;

impl Progress<K, String> for Refusing {
    fn event<'a>(&'a self, e: Event<'a, K>) -> BoxFuture<'a, Result<(), String>> {
        let refuse = e.phase == K::Bytes && e.step == Step::Started;
        async move {
            if refuse {
                Err("status not saved".to_string())
            } else {
                Ok(())
            }
        }
        .boxed()
    }
}

#[tokio::test]
async fn a_sink_error_stops_the_walk_before_the_phase_runs() {
    let toys = toys();
    let ctx = Ctx::default();
    let err = procedure(&toys)
        .apply(&ctx, &Refusing, None)
        .await
        .unwrap_err();
    assert_eq!(
        (err.phase, err.error.as_str()),
        (K::Bytes, "status not saved")
    );
    assert!(!ctx.log().contains(&"begin Bytes".to_string()));
}

#[tokio::test]
async fn a_phase_past_its_deadline_fails_with_the_deadline_error_and_others_finish() {
    // Bytes "hangs" (an hour); Certs finishes within the deadline.
    let mut toys = toys();
    toys[1].ms = 3_600_000;
    let ctx = Ctx::default();
    let rec = Recorder::default();
    let started = std::time::Instant::now();
    let err = procedure(&toys)
        .with_deadline(Duration::from_millis(200), |k, after| {
            format!("{k:?} did not finish within {after:?}")
        })
        .apply(&ctx, &rec, None)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.phase, K::Bytes);
    assert_eq!(err.error, "Bytes did not finish within 200ms");
    let events = rec.events();
    assert!(
        events.contains(&"Certs done Some(Bytes)".to_string()),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("Bytes failed")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.starts_with("Start")), "{events:?}");
    // Phases that finish in time are not touched by the deadline.
    toys[1].ms = 10;
    let ok = procedure(&toys)
        .with_deadline(Duration::from_secs(5), |k, _| format!("{k:?}"))
        .apply(&Ctx::default(), &Recorder::default(), None)
        .await
        .unwrap();
    assert_eq!(ok.walked().len(), 4);
}
