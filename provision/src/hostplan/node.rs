//! Facts about a node that `kubeup up` (the controller) and the operator
//! (workers) share: the Node object made before a kubelet starts, the pause
//! image, forwarding.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::HostFile;
use crate::artifacts::BundleManifest;

/// The sandbox (pause) image containerd uses when the bundle names none.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
/// The label and taint of a controller.
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";
/// Forwarding on at boot; [`FORWARDING_NOW`] sets it at once.
pub const SYSCTL_CONF: &str = "/etc/sysctl.d/99-kubeup.conf";
/// The privileged command that turns forwarding on now (per network
/// namespace; cheap and idempotent).
pub const FORWARDING_NOW: &str = "sysctl -q -w net.ipv4.ip_forward=1";

/// The pause image of the bundle (its `images/pause.tar`), else [`PAUSE_IMAGE`].
pub fn pause_image(m: &BundleManifest) -> String {
    m.files
        .get("images/pause.tar")
        .and_then(|f| f.image.clone())
        .filter(|i| i.contains(':'))
        .unwrap_or_else(|| PAUSE_IMAGE.into())
}

/// The file that keeps forwarding on across reboots.
pub fn sysctl_file() -> HostFile {
    HostFile::new(
        SYSCTL_CONF,
        "# Written by kubeup.\nnet.ipv4.ip_forward = 1\n",
        0o644,
        &[],
    )
}

/// A Node as the kubelet would register it, made before the kubelet starts:
/// the controller-manager gives it a podCIDR at once (the CNI config is
/// there when the kubelet starts), and labels, taints and ownership hold
/// from the first moment. The kubelet fills in the rest when it registers.
#[derive(Clone, Debug, Default)]
pub struct NodeObject {
    pub name: String,
    /// Besides `kubernetes.io/hostname` and `kubernetes.io/os`.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Claimed at creation (the first Node of a cluster); `None` leaves it
    /// to the controller-manager's allocator.
    pub pod_cidr: Option<String>,
}

impl NodeObject {
    /// A controller: the control-plane label and `NoSchedule` taint.
    pub fn controller(name: &str, pod_cidr: Option<String>) -> Self {
        Self {
            name: name.into(),
            labels: [(CONTROL_PLANE_ROLE.to_string(), String::new())].into(),
            taints: vec![Taint {
                key: CONTROL_PLANE_ROLE.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }],
            pod_cidr,
            ..Default::default()
        }
    }

    /// A worker owned by whoever `owner_key` names (label and annotation).
    pub fn worker(name: &str, owner_key: &str, label_value: &str, owner: &str) -> Self {
        Self {
            name: name.into(),
            labels: [(owner_key.to_string(), label_value.to_string())].into(),
            annotations: [(owner_key.to_string(), owner.to_string())].into(),
            ..Default::default()
        }
    }

    pub fn build(self) -> Node {
        let mut labels = self.labels;
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        let spec = (!self.taints.is_empty() || self.pod_cidr.is_some()).then(|| NodeSpec {
            taints: (!self.taints.is_empty()).then_some(self.taints),
            pod_cidrs: self.pod_cidr.clone().map(|c| vec![c]),
            pod_cidr: self.pod_cidr,
            ..Default::default()
        });
        Node {
            metadata: ObjectMeta {
                name: Some(self.name),
                labels: Some(labels),
                annotations: (!self.annotations.is_empty()).then_some(self.annotations),
                ..Default::default()
            },
            spec,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_node_carries_its_role_and_claimed_cidr() {
        let node = NodeObject::controller("n1", Some("10.244.0.0/24".into())).build();
        assert_eq!(
            serde_json::to_value(&node).unwrap(),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": "n1",
                    "labels": {
                        "kubernetes.io/hostname": "n1",
                        "kubernetes.io/os": "linux",
                        "node-role.kubernetes.io/control-plane": "",
                    },
                },
                "spec": {
                    "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                    "podCIDR": "10.244.0.0/24",
                    "podCIDRs": ["10.244.0.0/24"],
                },
            })
        );
        let later = NodeObject::controller("n1", None).build();
        assert_eq!(
            serde_json::to_value(later).unwrap()["spec"],
            serde_json::json!({
                "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
            })
        );
    }

    #[test]
    fn a_worker_node_names_its_owner_and_leaves_the_cidr_to_the_allocator() {
        let n = NodeObject::worker(
            "worker-1",
            "kubeup.dev/workerjoin",
            "default.w1",
            "default.w1",
        )
        .build();
        assert_eq!(n.metadata.name.as_deref(), Some("worker-1"));
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["kubeup.dev/workerjoin"], "default.w1");
        assert_eq!(labels["kubernetes.io/hostname"], "worker-1");
        assert_eq!(
            n.metadata.annotations.unwrap()["kubeup.dev/workerjoin"],
            "default.w1"
        );
        assert!(
            n.spec.is_none(),
            "the controller-manager assigns the podCIDR"
        );
    }
}
