//! Host plans: what a controller or a worker needs — files, certificates,
//! units — rendered as data by pure functions, then applied over SSH by the
//! CLI (`kubeup up`) or the operator. Rendering is deterministic, so the
//! same input gives the same bytes and a converged host sees no change.

pub mod apilb;
pub mod certs;
pub mod configs;
pub mod etcdhost;
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
    /// The node-local load balancer in front of every apiserver (haproxy on
    /// loopback, see [`apilb`]): what the node's kubelet, kube-proxy and
    /// flanneld dial.
    ApiLb,
    /// keepalived holding the control-plane virtual IP (controllers with a
    /// `VirtualIP` endpoint only).
    Vip,
}

impl Unit {
    /// Start order: containerd first, the API before its clients.
    pub const CONTROLLER: [Unit; 8] = [
        Unit::Containerd,
        Unit::ApiLb,
        Unit::Etcd,
        Unit::KubeApiserver,
        Unit::KubeControllerManager,
        Unit::KubeScheduler,
        Unit::Kubelet,
        Unit::KubeProxy,
    ];
    pub const WORKER: [Unit; 4] = [
        Unit::Containerd,
        Unit::ApiLb,
        Unit::Kubelet,
        Unit::KubeProxy,
    ];
    /// Every unit kubeup may have installed, in the order `reset` stops them:
    /// the API's clients first, containerd last.
    pub const STOP_ORDER: [Unit; 10] = [
        Unit::Flannel,
        Unit::KubeProxy,
        Unit::Kubelet,
        Unit::KubeScheduler,
        Unit::KubeControllerManager,
        Unit::Vip,
        Unit::KubeApiserver,
        Unit::Etcd,
        Unit::ApiLb,
        Unit::Containerd,
    ];

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
            Unit::ApiLb => "kubeup-apiserver-lb",
            Unit::Vip => "kubeup-vip",
        }
    }

    /// Units that take a new configuration without dropping what they
    /// serve: `systemctl reload-or-restart` instead of `restart`. A new
    /// backend list must not cut the kubelets' watches.
    pub fn reloads(self) -> bool {
        matches!(self, Unit::ApiLb | Unit::Vip)
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
    /// Every controller's address: the backends of the node's local load
    /// balancer, through which all its components reach the API
    /// ([`apilb::LOCAL_URL`]).
    pub api_backends: Vec<String>,
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
    /// Where its apiserver finds etcd.
    pub etcd: EtcdPlacement,
    /// The client-facing endpoint's address, named in the apiserver's
    /// certificate.
    pub endpoint: Option<String>,
    /// The virtual IP this controller takes part in holding.
    pub vip: Option<apilb::VipInput>,
}

/// Where a controller's apiserver finds etcd.
#[derive(Clone, Debug)]
pub enum EtcdPlacement {
    /// A member on the controller itself (the apiserver dials loopback).
    Stacked(EtcdMember),
    /// Dedicated etcd hosts, by address: the apiserver dials every one.
    External(Vec<String>),
}

impl EtcdPlacement {
    /// The member on this host, when etcd is stacked.
    pub fn local(&self) -> Option<&EtcdMember> {
        match self {
            EtcdPlacement::Stacked(m) => Some(m),
            EtcdPlacement::External(_) => None,
        }
    }

    /// `--etcd-servers`: the local member, or every dedicated host.
    pub fn servers(&self) -> String {
        match self {
            EtcdPlacement::Stacked(_) => "https://127.0.0.1:2379".into(),
            EtcdPlacement::External(hosts) => hosts
                .iter()
                .map(|a| format!("https://{a}:2379"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// One etcd member (on a controller or a dedicated host).
#[derive(Clone, Debug)]
pub struct EtcdMember {
    /// The member name (a controller's Node name).
    pub name: String,
    pub address: String,
    pub kubernetes_version: String,
    /// Names the cluster token, so two clusters' members never mix.
    pub cluster_name: String,
    /// Every member, this one included: (name, address).
    pub members: Vec<(String, String)>,
    /// `existing` when this member joins a running etcd (as a learner);
    /// `new` when the members start together.
    pub joins_existing: bool,
}

/// A worker's input for unit tests of the renderers.
#[cfg(test)]
pub(crate) fn sample_worker_input() -> NodeInput {
    NodeInput {
        node_name: "worker-1".into(),
        address: "198.18.0.11".into(),
        kubernetes_version: "v1.34.10".into(),
        api_backends: vec!["198.18.0.10".into()],
        cluster_dns: "10.96.0.10".into(),
        cluster_domain: "cluster.local".into(),
        pod_cidr: "10.244.0.0/16".into(),
        pause_image: node::PAUSE_IMAGE.into(),
        register_taints: vec![],
    }
}
