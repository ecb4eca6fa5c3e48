//! `WorkerJoin`: "join this machine to the cluster as a worker".

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::host::{
    ADDRESS_PATTERN, Bastion, HostKeyTrust, SshSecretRef, default_port, default_user,
};

/// A machine reachable over SSH that the kubeup operator joins to the
/// cluster as a worker node. Deleting the object drains the node and resets
/// the machine.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kubeup.dev",
    version = "v1alpha1",
    kind = "WorkerJoin",
    namespaced,
    status = "WorkerJoinStatus",
    shortname = "wj",
    category = "kubeup",
    doc = "A machine reachable over SSH that the kubeup operator joins to the cluster as a worker node.",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts",
        priority = "1"
    ),
    printcolumn(
        name = "Error",
        type_ = "string",
        json_path = ".status.lastError",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.address == oldSelf.address").message("spec.address is immutable: delete this WorkerJoin and create a new one"))]
#[x_kube(validation = Rule::new("!self.address.matches('^[0-9.]+$') || self.address.matches('^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])[.]){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$')").message("spec.address: an IPv4 address must be in canonical dotted-decimal form (four numbers 0-255, no leading zeros)"))]
#[x_kube(validation = Rule::new("!has(self.labels) || self.labels.all(k, size(k) <= 316 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))").message("spec.labels: every key must be a qualified name ([prefix/]name, as for Kubernetes labels)"))]
#[x_kube(validation = Rule::new("!has(self.labels) || self.labels.all(k, !k.startsWith('kubeup.dev/') && (!k.matches('^([^/]*[.])?(kubernetes[.]io|k8s[.]io)/') || k in ['node.kubernetes.io/instance-type', 'topology.kubernetes.io/region', 'topology.kubernetes.io/zone', 'node-role.kubernetes.io/worker']))").message("spec.labels: kubeup.dev/, kubernetes.io/ and k8s.io/ label keys are reserved (allowed: node.kubernetes.io/instance-type, topology.kubernetes.io/region, topology.kubernetes.io/zone, node-role.kubernetes.io/worker)"))]
#[x_kube(validation = Rule::new("!has(self.taints) || self.taints.all(t, !t.key.matches('^(kubeup[.]dev|([^/]*[.])?(kubernetes[.]io|k8s[.]io))/'))").message("spec.taints: kubeup.dev/, kubernetes.io/ and k8s.io/ taint keys are reserved"))]
pub struct WorkerJoinSpec {
    /// IPv4 address or DNS name the operator connects to over SSH; also
    /// the node's InternalIP when it is an address.
    #[schemars(pattern(ADDRESS_PATTERN), length(min = 1, max = 253))]
    pub address: String,
    /// SSH port on the machine.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// SSH user. Any user other than `root` runs privileged steps through
    /// `sudo -n` (or with the password from `sshSecretRef.sudoPasswordKey`).
    #[serde(default = "default_user")]
    #[schemars(length(min = 1, max = 32))]
    pub user: String,
    /// The Secret (type `kubernetes.io/ssh-auth`) with the SSH private key.
    pub ssh_secret_ref: SshSecretRef,
    /// Optional jump host the machine is reached through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Bastion>,
    /// How the machine's SSH host key is trusted (`Pin` or `AcceptNew`).
    #[serde(default)]
    pub host_key: HostKeyTrust,
    /// Name of the Node; defaults to the machine's hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub node_name: Option<String>,
    /// Labels set on the Node and kept in sync (at most 64; Kubernetes
    /// label syntax; `kubeup.dev/`, `kubernetes.io/` and `k8s.io/` keys are
    /// reserved except a few well-known worker labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    pub labels: BTreeMap<String, String>,
    /// Taints set on the Node and kept in sync (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub taints: Vec<NodeTaint>,
    /// Connect, verify the host key and run preflight only; report in status
    /// what a join would do and change nothing on the machine.
    #[serde(default)]
    pub dry_run: bool,
}

impl crate::host::Reachable for WorkerJoinSpec {
    fn endpoint(&self) -> crate::host::Endpoint<'_> {
        crate::host::Endpoint {
            address: &self.address,
            port: self.port,
            user: &self.user,
            host_key: &self.host_key,
        }
    }
}

/// `[prefix/]name` as Kubernetes label and taint keys.
pub const QUALIFIED_NAME_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A Kubernetes label value (may be empty).
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";

/// A taint for the Node, as in `core/v1 Taint`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeTaint {
    /// Taint key (a qualified name).
    #[schemars(length(min = 1, max = 316), pattern(QUALIFIED_NAME_PATTERN))]
    pub key: String,
    /// Taint value (label-value syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), pattern(LABEL_VALUE_PATTERN))]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// Effect of a taint.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum TaintEffect {
    #[default]
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// Where a join stands. Each phase is recorded before the next starts, so an
/// operator restart resumes from here.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum WorkerJoinPhase {
    /// Accepted, not started.
    #[default]
    Pending,
    /// Reading the SSH Secret, connecting, verifying the host key.
    Connecting,
    /// Checking the machine can run a node.
    Preflight,
    /// Uploading binaries and images (skipped where checksums match).
    Installing,
    /// Issuing the kubelet's client certificate through the CSR API and
    /// the node components' tokens (while the binaries upload).
    Certificates,
    /// Writing the configuration and creating the Node (while the binaries
    /// upload).
    Configuring,
    /// Starting containerd, kubelet, kube-proxy.
    Starting,
    /// Waiting for the Node to register and become Ready.
    WaitingForNode,
    /// The Node is Ready.
    Ready,
    /// Stopped on an error that needs a change to the object (see conditions).
    Failed,
    /// Draining the Node and resetting the machine.
    Deleting,
    /// `dryRun`: checks passed, nothing was changed.
    DryRunComplete,
}

impl WorkerJoinPhase {
    /// Every phase, in the order a join goes through them: the one list
    /// status, metrics, `kubeup join --wait` and the docs use.
    pub const ALL: [WorkerJoinPhase; 12] = [
        Self::Pending,
        Self::Connecting,
        Self::Preflight,
        Self::Installing,
        Self::Certificates,
        Self::Configuring,
        Self::Starting,
        Self::WaitingForNode,
        Self::Ready,
        Self::Failed,
        Self::Deleting,
        Self::DryRunComplete,
    ];

    /// The name in status (`.status.phase`), metrics and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Connecting => "Connecting",
            Self::Preflight => "Preflight",
            Self::Installing => "Installing",
            Self::Certificates => "Certificates",
            Self::Configuring => "Configuring",
            Self::Starting => "Starting",
            Self::WaitingForNode => "WaitingForNode",
            Self::Ready => "Ready",
            Self::Failed => "Failed",
            Self::Deleting => "Deleting",
            Self::DryRunComplete => "DryRunComplete",
        }
    }

    /// What happens in it, for Events, progress and the docs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Pending => "accepted, not started",
            Self::Connecting => "reading the SSH Secret, connecting, verifying the host key",
            Self::Preflight => "checking the machine can run a node",
            Self::Installing => "uploading binaries and images (skipped where checksums match)",
            Self::Certificates => {
                "issuing the kubelet's client certificate (CSR API) and the node components' tokens"
            }
            Self::Configuring => "writing the configuration and creating the Node",
            Self::Starting => "starting containerd, kubelet, kube-proxy",
            Self::WaitingForNode => "importing images while the Node registers and becomes Ready",
            Self::Ready => "the Node is Ready",
            Self::Failed => "the join failed and waits for a change",
            Self::Deleting => "draining the Node and resetting the machine",
            Self::DryRunComplete => "dry run complete: checks passed, nothing was changed",
        }
    }

    /// No more work until something changes.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Ready | Self::Failed | Self::DryRunComplete)
    }
}

/// The condition types of a WorkerJoin, in the order status lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerJoinCondition {
    HostKeyVerified,
    PreflightPassed,
    CertificateIssued,
    NodeRegistered,
    Ready,
}

impl WorkerJoinCondition {
    pub const ALL: [WorkerJoinCondition; 5] = [
        Self::HostKeyVerified,
        Self::PreflightPassed,
        Self::CertificateIssued,
        Self::NodeRegistered,
        Self::Ready,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HostKeyVerified => "HostKeyVerified",
            Self::PreflightPassed => "PreflightPassed",
            Self::CertificateIssued => "CertificateIssued",
            Self::NodeRegistered => "NodeRegistered",
            Self::Ready => "Ready",
        }
    }
}

/// The reasons kubeup sets on a WorkerJoin's conditions (besides the
/// error categories of a failed attempt, e.g. `HostKeyMismatch`,
/// `SudoNeedsPassword`, `CsrRefused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// the condition has not been computed yet.
    NotYetObserved,
    /// the host key matched the pin or the recorded key.
    Verified,
    /// the host key differs from the pin or the recorded key.
    HostKeyMismatch,
    /// preflight passed.
    Passed,
    /// a preflight check failed; nothing was changed.
    PreflightFailed,
    /// the node's credentials are issued and current.
    Issued,
    /// the kubelet has not been started yet.
    NotJoinedYet,
    /// waiting for the Node to register.
    NodeNotFound,
    /// the Node is registered.
    NodeRegistered,
    /// a join is in progress.
    Joining,
    /// the last join attempt failed; it is retried.
    JoinError,
    /// the Node is Ready.
    NodeReady,
    /// the Node is registered but not Ready.
    NodeNotReady,
    /// dryRun: checks passed, nothing was changed.
    DryRun,
    /// the join stopped on an error that needs a change.
    Failed,
    /// the spec can never work with this cluster (see the message);
    /// change it, or the Cluster it conflicts with.
    InvalidSpec,
    /// the host reports no hostname, or one no Node may have (a name of
    /// the apiserver); set spec.nodeName.
    InvalidHostName,
    /// the node name is another's (a Node or an earlier WorkerJoin).
    NodeNameTaken,
    /// an earlier WorkerJoin joins the same machine.
    DuplicateAddress,
    /// the operator does not serve this namespace.
    NamespaceNotServed,
    /// the SSH Secret does not exist (yet).
    SecretNotFound,
    /// the SSH Secret is not of type kubernetes.io/ssh-auth.
    SecretWrongType,
    /// the SSH Secret lacks the key it should hold.
    SecretMissingKey,
    /// removing the worker failed; the finalizer stays.
    CleanupFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotYetObserved => "NotYetObserved",
            Self::Verified => "Verified",
            Self::HostKeyMismatch => "HostKeyMismatch",
            Self::Passed => "Passed",
            Self::PreflightFailed => "PreflightFailed",
            Self::Issued => "Issued",
            Self::NotJoinedYet => "NotJoinedYet",
            Self::NodeNotFound => "NodeNotFound",
            Self::NodeRegistered => "NodeRegistered",
            Self::Joining => "Joining",
            Self::JoinError => "JoinError",
            Self::NodeReady => "NodeReady",
            Self::NodeNotReady => "NodeNotReady",
            Self::DryRun => "DryRun",
            Self::Failed => "Failed",
            Self::InvalidSpec => "InvalidSpec",
            Self::InvalidHostName => "InvalidHostName",
            Self::NodeNameTaken => "NodeNameTaken",
            Self::DuplicateAddress => "DuplicateAddress",
            Self::NamespaceNotServed => "NamespaceNotServed",
            Self::SecretNotFound => "SecretNotFound",
            Self::SecretWrongType => "SecretWrongType",
            Self::SecretMissingKey => "SecretMissingKey",
            Self::CleanupFailed => "CleanupFailed",
        }
    }
}

/// Observed state of a join.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerJoinStatus {
    /// Current phase of the join.
    #[serde(default)]
    pub phase: WorkerJoinPhase,
    /// Conditions: HostKeyVerified, PreflightPassed, CertificateIssued,
    /// NodeRegistered, Ready.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `.metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the Node this machine registered as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// SHA256 fingerprint of the host key that was verified (recorded on
    /// first contact with `AcceptNew`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
    /// The full host public key recorded with `AcceptNew`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Number of attempts since the last success or spec change.
    #[serde(default)]
    pub attempts: u32,
    /// The last error, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds spent in each finished phase.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phase_durations: BTreeMap<String, f64>,
    /// Versions installed on the machine (kubelet, containerd, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, String>,
    /// With `dryRun`: what a join would do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned_actions: Vec<String>,
    /// The kubelet client CSR created for this join and not yet finished
    /// (its private key waits on the host, never in the API): an operator
    /// restarted meanwhile resumes this CSR instead of approving another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_csr: Option<String>,
    /// sha256 of the public key of `pendingCsr`, made by the operator with
    /// the key on the host: a CSR carrying any other key is never approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_csr_key_sha256: Option<String>,
    /// When the node components' ServiceAccount tokens (kube-proxy,
    /// flannel; bound to the Node, short-lived) are due for renewal, RFC
    /// 3339. The operator connects to the machine only once this time has
    /// passed (or when it is missing), not on every resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_renew_at: Option<String>,
    /// The apiservers the machine's local load balancer spreads over, as
    /// last written there: kept equal to the Cluster's controllers (a
    /// changed list is written and haproxy reloaded, the kubelet untouched).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_backends: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_are_the_wire_names_and_all_are_listed_in_order() {
        for p in WorkerJoinPhase::ALL {
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
        let mut sorted = WorkerJoinPhase::ALL;
        sorted.sort();
        assert_eq!(sorted, WorkerJoinPhase::ALL, "ALL follows the join's order");
    }
}
