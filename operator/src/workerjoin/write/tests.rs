//! Tests of the parent module.

use super::*;

fn obs() -> Observation {
    Observation {
        key: "default.w1".into(),
        host: "198.18.0.11".into(),
        generation: 2,
        current: WorkerJoinStatus::default(),
        secret: decide::SecretState::Usable,
        secret_rv: Some("7".into()),
        node: None,
        spec_problems: vec![],
        node_conflict: None,
        conflict: None,
        blocked: false,
        backoff_left: None,
    }
}

fn walked_with(result: Result<Walk>) -> Done {
    Done::Walked {
        status: Box::default(),
        result,
        elapsed: Duration::from_millis(1500),
    }
}

#[test]
fn a_transient_failure_backs_off_and_a_permanent_one_waits_for_a_change() {
    let now = Instant::now();
    let join = Decision::Join {
        from: Phase::Connecting,
    };
    let w = outcome(&join, walked_with(Err(Error::NoCluster)), &obs(), 0.5, now);
    let st = w.status.unwrap();
    assert_eq!((st.attempts, st.observed_generation), (1, Some(2)));
    assert_ne!(st.phase, Phase::Failed);
    assert_eq!(w.action, Action::requeue(Duration::from_secs(5)));
    assert_eq!(
        w.memory.unwrap().next_attempt,
        Some(now + Duration::from_secs(5))
    );
    assert_eq!(w.events.len(), 1);
    assert!(w.events[0].warning);
    assert_eq!(w.events[0].reason, "ClusterNotFound");

    let w = outcome(
        &join,
        walked_with(Err(Error::InvalidSpec("bad".into()))),
        &obs(),
        0.5,
        now,
    );
    let st = w.status.unwrap();
    assert_eq!(st.phase, Phase::Failed);
    assert_eq!(w.action, Action::await_change());
    let m = w.memory.unwrap();
    assert_eq!(
        (m.next_attempt, m.blocked_secret_rv),
        (None, Some("7".into()))
    );
}

#[test]
fn a_ready_join_records_success_once() {
    let w = outcome(
        &Decision::Join {
            from: Phase::Connecting,
        },
        walked_with(Ok(Walk::Ready { node: None })),
        &obs(),
        0.5,
        Instant::now(),
    );
    let st = w.status.unwrap();
    assert_eq!(
        (st.phase, st.attempts, st.last_error),
        (Phase::Ready, 0, None)
    );
    assert_eq!(w.counts, vec![Count::Succeeded { seconds: 1.5 }]);
    assert_eq!(w.events.len(), 1);
    assert_eq!(w.action, Action::requeue(RESYNC));
}

#[test]
fn a_refusal_announces_itself_once() {
    let refuse = Decision::Refuse {
        reason: kubeup_crds::workerjoin::Reason::InvalidSpec,
        message: "spec.address: bad".into(),
    };
    let mut o = obs();
    let w = outcome(&refuse, Done::Nothing, &o, 0.5, Instant::now());
    assert_eq!(w.events.len(), 1);
    o.current = w.status.unwrap();
    let again = outcome(&refuse, Done::Nothing, &o, 0.5, Instant::now());
    assert!(
        again.events.is_empty(),
        "the same refusal is not announced twice"
    );
    assert_eq!(again.action, Action::await_change());
}

#[test]
fn a_dry_run_lists_its_plan() {
    let w = outcome(
        &Decision::DryRun,
        walked_with(Ok(Walk::DryRun {
            planned: vec!["upload bin/kubelet".into()],
        })),
        &obs(),
        0.5,
        Instant::now(),
    );
    let st = w.status.unwrap();
    assert_eq!(st.phase, Phase::DryRunComplete);
    assert_eq!(st.planned_actions, vec!["upload bin/kubelet"]);
    assert_eq!(w.action, Action::await_change());
}
