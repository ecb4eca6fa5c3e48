//! Host plans: what a controller or a worker needs — files, certificates,
//! units — rendered as data by pure functions, then applied over SSH by the
//! CLI (`kubeup up`) or the operator. Rendering is deterministic, so the
//! same input gives the same bytes and a converged host sees no change.

pub mod certs;
pub mod configs;
pub mod layout;
pub mod network;
pub mod node;
pub mod units;
pub mod worker;

use std::collections::BTreeSet;

/// A systemd unit kubeup manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Unit {
    Containerd,
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    Kubelet,
    KubeProxy,
    /// flanneld, with `networking.cni: flannel` (see [`network`]).
    Flannel,
}

impl Unit {
    /// Start order: containerd first, the API before its clients.
    pub const CONTROLLER: [Unit; 7] = [
        Unit::Containerd,
        Unit::Etcd,
        Unit::KubeApiserver,
        Unit::KubeControllerManager,
        Unit::KubeScheduler,
        Unit::Kubelet,
        Unit::KubeProxy,
    ];
    pub const WORKER: [Unit; 3] = [Unit::Containerd, Unit::Kubelet, Unit::KubeProxy];

    pub fn name(self) -> &'static str {
        match self {
            Unit::Containerd => "containerd",
            Unit::Etcd => "etcd",
            Unit::KubeApiserver => "kube-apiserver",
            Unit::KubeControllerManager => "kube-controller-manager",
            Unit::KubeScheduler => "kube-scheduler",
            Unit::Kubelet => "kubelet",
            Unit::KubeProxy => "kube-proxy",
            Unit::Flannel => "flanneld",
        }
    }

    pub fn service(self) -> String {
        format!("{}.service", self.name())
    }
}

/// One file to put on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    /// Units to restart when this file changes.
    pub affects: BTreeSet<Unit>,
}

impl HostFile {
    pub fn new(
        path: impl Into<String>,
        content: impl Into<Vec<u8>>,
        mode: u32,
        affects: &[Unit],
    ) -> Self {
        Self {
            path: path.into(),
            content: content.into(),
            mode,
            affects: affects.iter().copied().collect(),
        }
    }
}

/// What every node (controller or worker) runs.
#[derive(Clone, Debug)]
pub struct NodeInput {
    /// Node name (also the etcd member name on a controller).
    pub node_name: String,
    /// The address other machines reach this one at (InternalIP).
    pub address: String,
    pub kubernetes_version: String,
    /// `https://<controller>:6443`.
    pub api_server: String,
    pub cluster_dns: String,
    pub cluster_domain: String,
    pub pod_cidr: String,
    /// The pause image reference containerd uses as sandbox image.
    pub pause_image: String,
    pub register_taints: Vec<String>,
}

/// What a controller runs in addition.
#[derive(Clone, Debug)]
pub struct ControllerInput {
    pub node: NodeInput,
    pub cluster_name: String,
    pub service_cidr: String,
}

/// A worker's input for unit tests of the renderers.
#[cfg(test)]
pub(crate) fn sample_worker_input() -> NodeInput {
    NodeInput {
        node_name: "worker-1".into(),
        address: "198.18.0.11".into(),
        kubernetes_version: "v1.34.10".into(),
        api_server: "https://198.18.0.10:6443".into(),
        cluster_dns: "10.96.0.10".into(),
        cluster_domain: "cluster.local".into(),
        pod_cidr: "10.244.0.0/16".into(),
        pause_image: node::PAUSE_IMAGE.into(),
        register_taints: vec![],
    }
}
