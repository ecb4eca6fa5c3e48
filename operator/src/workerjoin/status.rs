//! Status and conditions, computed by pure functions of what was observed.

use kubeup_crds::conditions::{self, ConditionStatus, set_condition};
use kubeup_crds::workerjoin::{
    Reason, WorkerJoinCondition as Condition, WorkerJoinPhase as Phase, WorkerJoinStatus,
};
use serde_json::{Value, json};

use crate::workerjoin::decide::NodeView;

const NODE_REGISTERED: &str = Condition::NodeRegistered.as_str();
const READY: &str = Condition::Ready.as_str();

/// RFC 3339, seconds precision, UTC.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Set one condition on `status`, stamped with `generation`.
pub fn set(
    status: &mut WorkerJoinStatus,
    type_: &str,
    value: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
) {
    // A condition message holds 32 kB; cut on a character boundary.
    let message = kubeup_provision::text::truncate_chars(&message.into(), 32_000);
    set_condition(
        &mut status.conditions,
        conditions::Condition {
            type_: type_.into(),
            status: value,
            reason: reason.into(),
            message,
            last_transition_time: now(),
            observed_generation: Some(generation),
        },
    );
}

/// Every condition type present (Unknown until known), in a stable order.
pub fn ensure_all(status: &mut WorkerJoinStatus, generation: i64) {
    for t in Condition::ALL.map(Condition::as_str) {
        if !status.conditions.iter().any(|c| c.type_ == t) {
            set(
                status,
                t,
                ConditionStatus::Unknown,
                Reason::NotYetObserved.as_str(),
                "",
                generation,
            );
        }
    }
    status.conditions.sort_by_key(|c| {
        Condition::ALL
            .iter()
            .position(|t| t.as_str() == c.type_)
            .unwrap_or(usize::MAX)
    });
}

/// NodeRegistered and Ready from the Node and the phase: recomputed on
/// every pass.
pub fn node_conditions(
    phase: Phase,
    node_name: Option<&str>,
    node: Option<&NodeView>,
    last_error: Option<&str>,
) -> [(&'static str, ConditionStatus, &'static str, String); 2] {
    let registered = match (node_name, node) {
        (Some(n), Some(v)) => (
            NODE_REGISTERED,
            ConditionStatus::True,
            Reason::NodeRegistered.as_str(),
            format!(
                "Node {n} registered{}",
                v.pod_cidr
                    .as_deref()
                    .map(|c| format!(" with podCIDR {c}"))
                    .unwrap_or_default()
            ),
        ),
        (Some(n), None) if phase >= Phase::WaitingForNode && phase != Phase::Failed => (
            NODE_REGISTERED,
            ConditionStatus::False,
            Reason::NodeNotFound.as_str(),
            format!("waiting for Node {n} to register"),
        ),
        _ => (
            NODE_REGISTERED,
            ConditionStatus::False,
            Reason::NotJoinedYet.as_str(),
            "the kubelet has not been started yet".into(),
        ),
    };
    let ready = match (phase, node) {
        (Phase::DryRunComplete, _) => (
            READY,
            ConditionStatus::False,
            Reason::DryRun.as_str(),
            "dryRun: checks passed, nothing was changed".into(),
        ),
        (Phase::Failed, _) => (
            READY,
            ConditionStatus::False,
            Reason::Failed.as_str(),
            last_error.unwrap_or("the join failed").to_string(),
        ),
        (_, Some(v)) if v.ready => (
            READY,
            ConditionStatus::True,
            Reason::NodeReady.as_str(),
            "the Node is Ready".into(),
        ),
        (_, Some(v)) => (
            READY,
            ConditionStatus::False,
            Reason::NodeNotReady.as_str(),
            v.ready_message.clone(),
        ),
        _ => (
            READY,
            ConditionStatus::False,
            if last_error.is_some() {
                Reason::JoinError.as_str()
            } else {
                Reason::Joining.as_str()
            },
            last_error
                .map(str::to_string)
                .unwrap_or_else(|| format!("join in progress: {}", phase.as_str())),
        ),
    };
    [registered, ready]
}

/// Apply [`node_conditions`] to `status`.
pub fn apply_node_conditions(
    status: &mut WorkerJoinStatus,
    node: Option<&NodeView>,
    generation: i64,
) {
    let last = status.last_error.clone();
    for (t, v, reason, msg) in node_conditions(
        status.phase,
        status.node_name.as_deref(),
        node,
        last.as_deref(),
    ) {
        set(status, t, v, reason, msg, generation);
    }
}

/// The server-side-apply patch for the status subresource.
pub fn status_patch(status: &WorkerJoinStatus) -> Value {
    json!({
        "apiVersion": kubeup_crds::API_VERSION,
        "kind": "WorkerJoin",
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_the_node() {
        let v = NodeView {
            ready: true,
            pod_cidr: Some("10.244.1.0/24".into()),
            ..Default::default()
        };
        let [reg, ready] = node_conditions(Phase::Ready, Some("w1"), Some(&v), None);
        assert_eq!(reg.1, ConditionStatus::True);
        assert!(reg.3.contains("10.244.1.0/24"));
        assert_eq!((ready.1, ready.2), (ConditionStatus::True, "NodeReady"));

        let [reg, ready] = node_conditions(Phase::WaitingForNode, Some("w1"), None, None);
        assert_eq!((reg.1, reg.2), (ConditionStatus::False, "NodeNotFound"));
        assert_eq!(ready.2, "Joining");

        let [_, ready] = node_conditions(Phase::Installing, None, None, Some("boom"));
        assert_eq!((ready.2, ready.3.as_str()), ("JoinError", "boom"));
        let [_, ready] = node_conditions(Phase::Failed, None, None, Some("mismatch"));
        assert_eq!(ready.2, "Failed");
    }

    #[test]
    fn all_conditions_present_in_order_and_transition_time_kept() {
        let mut s = WorkerJoinStatus::default();
        set(&mut s, READY, ConditionStatus::False, "Joining", "", 1);
        ensure_all(&mut s, 1);
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, Condition::ALL.map(Condition::as_str));
        let t0 = s.conditions[4].last_transition_time.clone();
        set(&mut s, READY, ConditionStatus::False, "Joining", "again", 2);
        assert_eq!(s.conditions[4].last_transition_time, t0);
        assert_eq!(s.conditions[4].observed_generation, Some(2));
    }

    #[test]
    fn the_patch_names_the_kind() {
        let p = status_patch(&WorkerJoinStatus::default());
        assert_eq!(p["apiVersion"], "kubeup.dev/v1alpha1");
        assert_eq!(p["kind"], "WorkerJoin");
        assert_eq!(p["status"]["phase"], "Pending");
    }
}
