//! `metav1.Condition`-shaped conditions and the helpers to keep them.
//!
//! Our own struct (not k8s-openapi's) so it carries a JSON schema; the wire
//! shape is identical to `metav1.Condition`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One aspect of the object's current state, in the shape of `metav1.Condition`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase, e.g. `Ready`, `HostKeyVerified`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition: `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable reason for the last transition, in CamelCase.
    pub reason: String,
    /// Human-readable details of the last transition.
    #[serde(default)]
    pub message: String,
    /// When the condition last changed status (RFC 3339).
    pub last_transition_time: String,
    /// The `.metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

/// Set (insert or replace) `new` in `conditions`, keeping the old
/// `lastTransitionTime` when the status did not change, as Kubernetes does.
impl Condition {
    /// A condition that changed now (its transition time set to now).
    pub fn now(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            observed_generation: None,
        }
    }
}

pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conditions.push(new);
    }
}

/// Find a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: ConditionStatus, time: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status,
            reason: "R".into(),
            message: String::new(),
            last_transition_time: time.into(),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let mut cs = vec![cond(ConditionStatus::False, "t1")];
        set_condition(&mut cs, cond(ConditionStatus::False, "t2"));
        assert_eq!(cs[0].last_transition_time, "t1");
        set_condition(&mut cs, cond(ConditionStatus::True, "t3"));
        assert_eq!(cs[0].last_transition_time, "t3");
        assert_eq!(cs.len(), 1);
    }
}
