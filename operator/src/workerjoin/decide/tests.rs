//! Tests of the parent module.

use super::*;
use kubeup_crds::HostKeyTrust;
use kubeup_crds::workerjoin::Reason;

/// A plain WorkerJoin spec (root at 198.18.0.11, Secret worker-ssh).
pub(crate) fn spec() -> WorkerJoinSpec {
    WorkerJoinSpec {
        address: "198.18.0.11".into(),
        port: 22,
        user: "root".into(),
        ssh_secret_ref: kubeup_crds::SshSecretRef {
            name: "worker-ssh".into(),
            sudo_password_key: None,
        },
        ..Default::default()
    }
}

fn observed<'a>(spec: &'a WorkerJoinSpec, status: &'a WorkerJoinStatus) -> Observed<'a> {
    Observed {
        generation: 1,
        spec,
        status,
        secret: SecretState::Usable,
        spec_problems: vec![],
        conflict: None,
        node_conflict: None,
        node: None,
        blocked: false,
        backoff_left: None,
    }
}

#[test]
fn a_new_object_joins_from_the_start() {
    let (s, st) = (spec(), WorkerJoinStatus::default());
    assert_eq!(
        decide(&observed(&s, &st)),
        Decision::Join {
            from: Phase::Connecting
        }
    );
}

#[test]
fn a_recorded_phase_resumes_for_the_same_generation_only() {
    let s = spec();
    let st = WorkerJoinStatus {
        phase: Phase::Certificates,
        observed_generation: Some(1),
        ..Default::default()
    };
    assert_eq!(
        decide(&observed(&s, &st)),
        Decision::Join {
            from: Phase::Certificates
        }
    );
    let mut o = observed(&s, &st);
    o.generation = 2;
    assert_eq!(
        decide(&o),
        Decision::Join {
            from: Phase::Connecting
        }
    );
}

#[test]
fn ready_with_a_node_is_in_sync_and_without_rejoins() {
    let s = spec();
    let st = WorkerJoinStatus {
        phase: Phase::Ready,
        observed_generation: Some(1),
        ..Default::default()
    };
    let mut o = observed(&s, &st);
    o.node = Some(NodeView::default());
    assert_eq!(decide(&o), Decision::InSync);
    o.node = None;
    assert!(matches!(decide(&o), Decision::Join { .. }));
}

#[test]
fn bad_input_becomes_a_decision_not_a_retry_loop() {
    let s = spec();
    let st = WorkerJoinStatus::default();
    let mut o = observed(&s, &st);
    o.secret = SecretState::Missing;
    assert!(matches!(
        decide(&o),
        Decision::WaitForSecret {
            reason: Reason::SecretNotFound,
            ..
        }
    ));
    o.secret = SecretState::WrongType("Opaque".into());
    assert!(matches!(
        decide(&o),
        Decision::WaitForSecret {
            reason: Reason::SecretWrongType,
            ..
        }
    ));
    o.secret = SecretState::Usable;
    o.conflict = Some("default/first".into());
    match decide(&o) {
        Decision::Refuse { reason, message } => {
            assert_eq!(reason, Reason::DuplicateAddress);
            assert!(message.contains("default/first"), "{message}");
        }
        d => panic!("{d:?}"),
    }
    o.conflict = None;
    o.blocked = true;
    assert_eq!(decide(&o), Decision::Blocked);
    o.blocked = false;
    o.backoff_left = Some(Duration::from_secs(3));
    assert_eq!(decide(&o), Decision::Backoff(Duration::from_secs(3)));

    let mut pin = spec();
    pin.host_key = HostKeyTrust {
        policy: HostKeyPolicy::Pin,
        key: None,
    };
    assert!(matches!(
        decide(&observed(&pin, &st)),
        Decision::Refuse {
            reason: Reason::InvalidSpec,
            ..
        }
    ));
}

#[test]
fn dry_run_runs_once_per_generation() {
    let mut s = spec();
    s.dry_run = true;
    let st = WorkerJoinStatus::default();
    assert_eq!(decide(&observed(&s, &st)), Decision::DryRun);
    let done = WorkerJoinStatus {
        phase: Phase::DryRunComplete,
        observed_generation: Some(1),
        ..Default::default()
    };
    assert_eq!(decide(&observed(&s, &done)), Decision::Blocked);
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff(1, 0.5), Duration::from_secs(5));
    assert_eq!(backoff(2, 0.5), Duration::from_secs(10));
    assert_eq!(backoff(3, 0.5), Duration::from_secs(20));
    assert_eq!(backoff(30, 0.5), Duration::from_secs(300));
    assert!(backoff(1, 0.0) < backoff(1, 0.99));
}

#[test]
fn owners_and_conflicts() {
    assert_eq!(
        parse_owner("default.worker-1"),
        Some(("default".into(), "worker-1".into()))
    );
    assert_eq!(parse_owner("a.b.c"), Some(("a".into(), "b.c".into())));
    assert_eq!(parse_owner("nodot"), None);
    let long = format!("ns.{}", "x".repeat(80));
    assert!(owner_label_value(&long).len() <= 63);
    assert_eq!(owner_label_value("ns.w"), "ns.w");

    let claims = vec![("2026-01-01T00:00:00Z".to_string(), "a/first".to_string())];
    assert_eq!(
        conflicting_owner(("2026-01-02T00:00:00Z", "b/second"), &claims),
        Some("a/first".into())
    );
    let later = vec![("2026-01-03T00:00:00Z".to_string(), "c/third".to_string())];
    assert_eq!(
        conflicting_owner(("2026-01-02T00:00:00Z", "b/second"), &later),
        None
    );
}

#[test]
fn node_name_prefers_spec_then_status_then_hostname() {
    let mut s = spec();
    let mut st = WorkerJoinStatus::default();
    assert_eq!(
        node_name(&s, &st, Some("Worker-1\n")),
        Some("worker-1".into())
    );
    st.node_name = Some("recorded".into());
    assert_eq!(node_name(&s, &st, Some("x")), Some("recorded".into()));
    s.node_name = Some("pinned".into());
    assert_eq!(node_name(&s, &st, Some("x")), Some("pinned".into()));
}
