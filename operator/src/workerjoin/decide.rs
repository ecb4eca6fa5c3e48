//! Pure decisions: what to do with a WorkerJoin given what was observed.
//! No I/O here; every function is unit-tested.

use std::collections::BTreeMap;
use std::time::Duration;

use kubeup_crds::HostKeyPolicy;
use kubeup_crds::workerjoin::Reason;
use kubeup_crds::workerjoin::{WorkerJoinPhase as Phase, WorkerJoinSpec, WorkerJoinStatus};

/// The finalizer that makes delete drain and reset the host.
pub const FINALIZER: &str = "kubeup.dev/cleanup";
/// Label (and annotation, with the full value) on the Node naming its
/// WorkerJoin as `<namespace>.<name>`.
pub const NODE_LABEL: &str = "kubeup.dev/workerjoin";
/// `"true"` on a WorkerJoin: release it on delete without SSH cleanup of the
/// host (for a host that is gone for good).
pub const SKIP_HOST_CLEANUP: &str = "kubeup.dev/skip-host-cleanup";
/// Key of the private key in a `kubernetes.io/ssh-auth` Secret.
pub const SSH_PRIVATE_KEY: &str = "ssh-privatekey";
pub const SSH_AUTH_TYPE: &str = "kubernetes.io/ssh-auth";

/// What the referenced Secret looks like (never its content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    Usable,
    Missing,
    WrongType(String),
    MissingKey(String),
}

/// The Node as far as decisions go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub ready: bool,
    pub ready_message: String,
    pub pod_cidr: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Everything `decide` looks at.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub generation: i64,
    pub spec: &'a WorkerJoinSpec,
    pub status: &'a WorkerJoinStatus,
    pub secret: SecretState,
    /// Problems of the spec against the cluster ([`crate::workerjoin::specguard`]).
    pub spec_problems: Vec<String>,
    /// An earlier WorkerJoin (`ns/name`) that claims the same address.
    pub conflict: Option<String>,
    /// Why the node name is not this WorkerJoin's to use ([`crate::workerjoin::nodeclaim`]).
    pub node_conflict: Option<String>,
    pub node: Option<NodeView>,
    /// A permanent failure is recorded for this generation and nothing it
    /// depends on (the Secret) changed since.
    pub blocked: bool,
    /// Time left before the next attempt after a transient failure.
    pub backoff_left: Option<Duration>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Input that can never succeed: Failed with this reason until the
    /// object changes.
    Refuse { reason: Reason, message: String },
    /// The Secret is not usable yet; recovers when it appears.
    WaitForSecret { reason: Reason, message: String },
    /// A permanent failure stands for this generation: wait for a change.
    Blocked,
    /// A transient failure: try again after this long.
    Backoff(Duration),
    /// `dryRun`: connect, verify the host key, preflight, report.
    DryRun,
    /// Join, resuming at this phase (phases before it finished for this
    /// generation).
    Join { from: Phase },
    /// Joined: keep the Node's labels and taints in sync, report health.
    InSync,
}

/// The reasons [`decide`] refuses with, from what it observes each time
/// (never from a walk's memory): none of them blocks a WorkerJoin.
pub const REFUSALS: [Reason; 3] = [
    Reason::InvalidSpec,
    Reason::NodeNameTaken,
    Reason::DuplicateAddress,
];

/// Checks the schema cannot express and that need no cluster facts
/// (addresses, names, labels and taints are [`crate::workerjoin::specguard`]'s).
pub fn validate(spec: &WorkerJoinSpec) -> Result<(), String> {
    if spec.host_key.policy == HostKeyPolicy::Pin
        && spec.host_key.key.as_deref().unwrap_or("").trim().is_empty()
    {
        return Err("spec.hostKey.key is required with policy Pin".into());
    }
    Ok(())
}

pub fn decide(o: &Observed<'_>) -> Decision {
    if let Err(message) = validate(o.spec) {
        return Decision::Refuse {
            reason: Reason::InvalidSpec,
            message,
        };
    }
    if !o.spec_problems.is_empty() {
        return Decision::Refuse {
            reason: Reason::InvalidSpec,
            message: o.spec_problems.join("; "),
        };
    }
    if let Some(message) = &o.node_conflict {
        return Decision::Refuse {
            reason: Reason::NodeNameTaken,
            message: message.clone(),
        };
    }
    if let Some(other) = &o.conflict {
        return Decision::Refuse {
            reason: Reason::DuplicateAddress,
            message: format!(
                "WorkerJoin {other} already joins {}: one WorkerJoin per machine; delete one of them",
                o.spec.address
            ),
        };
    }
    match &o.secret {
        SecretState::Usable => {}
        SecretState::Missing => {
            return Decision::WaitForSecret {
                reason: Reason::SecretNotFound,
                message: format!(
                    "Secret {} not found; create it (type {SSH_AUTH_TYPE}, key {SSH_PRIVATE_KEY}) and the join starts by itself",
                    o.spec.ssh_secret_ref.name
                ),
            };
        }
        SecretState::WrongType(t) => {
            return Decision::WaitForSecret {
                reason: Reason::SecretWrongType,
                message: format!(
                    "Secret {} has type {t:?}, expected {SSH_AUTH_TYPE}",
                    o.spec.ssh_secret_ref.name
                ),
            };
        }
        SecretState::MissingKey(k) => {
            return Decision::WaitForSecret {
                reason: Reason::SecretMissingKey,
                message: format!("Secret {} has no key {k:?}", o.spec.ssh_secret_ref.name),
            };
        }
    }
    if o.blocked {
        return Decision::Blocked;
    }
    if let Some(left) = o.backoff_left
        && !left.is_zero()
    {
        return Decision::Backoff(left);
    }
    let current = o.status.observed_generation == Some(o.generation);
    if o.spec.dry_run {
        return if current && o.status.phase == Phase::DryRunComplete {
            Decision::Blocked
        } else {
            Decision::DryRun
        };
    }
    match o.status.phase {
        Phase::Ready if current && o.node.is_some() => Decision::InSync,
        p @ (Phase::Connecting
        | Phase::Preflight
        | Phase::Installing
        | Phase::Certificates
        | Phase::Configuring
        | Phase::Starting
        | Phase::WaitingForNode)
            if current =>
        {
            Decision::Join { from: p }
        }
        _ => Decision::Join {
            from: Phase::Connecting,
        },
    }
}

/// Exponential backoff after `attempts` failures: 5 s, 10 s, 20 s … capped
/// at 5 min, spread by `jitter` in [0, 1) over ±20 %.
pub fn backoff(attempts: u32, jitter: f64) -> Duration {
    let base = 5.0 * 2f64.powi(attempts.saturating_sub(1).min(16) as i32);
    let capped = base.min(300.0);
    let spread = 1.0 + (jitter.clamp(0.0, 1.0) - 0.5) * 0.4;
    Duration::from_secs_f64(capped * spread)
}

/// The Node name: the spec's, else the one recorded, else the host's name.
pub fn node_name(
    spec: &WorkerJoinSpec,
    status: &WorkerJoinStatus,
    hostname: Option<&str>,
) -> Option<String> {
    spec.node_name
        .clone()
        .or_else(|| status.node_name.clone())
        .or_else(|| {
            hostname
                .map(|h| h.trim().to_lowercase())
                .filter(|h| !h.is_empty())
        })
}

/// `<namespace>.<name>`: the Node label value naming a WorkerJoin.
pub fn owner_ref(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// The label value: the owner ref when it fits a label (63 chars), else a
/// hash of it (the annotation always carries the full ref).
pub fn owner_label_value(owner: &str) -> String {
    let valid = owner.len() <= 63
        && owner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        owner.to_string()
    } else {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(owner.as_bytes()));
        format!("h-{}", h.get(..40).unwrap_or(&h))
    }
}

/// Parse `<namespace>.<name>` (namespaces have no dots).
pub fn parse_owner(value: &str) -> Option<(String, String)> {
    let (ns, name) = value.split_once('.')?;
    (!ns.is_empty() && !name.is_empty()).then(|| (ns.to_string(), name.to_string()))
}

/// Among WorkerJoins claiming one address, the first created owns it
/// (ties broken by `ns/name`). `claims` are `(created RFC 3339, ns/name)`.
pub fn conflicting_owner(me: (&str, &str), claims: &[(String, String)]) -> Option<String> {
    let mut all: Vec<(&str, &str)> = claims
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .collect();
    all.push(me);
    all.sort();
    all.dedup();
    let first = all.first()?;
    (first.1 != me.1).then(|| first.1.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
