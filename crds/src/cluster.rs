//! `Cluster`: the whole cluster's settings. `cluster.yaml` is exactly one
//! `Cluster` document, so the file the CLI reads is the object the operator
//! sees.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::host::{ADDRESS_PATTERN, Bastion, HostKeyTrust, default_port, default_user};

/// The Kubernetes minor kubeup supports: hosts here run cgroup v1, which
/// kubelet 1.35+ refuses by default.
pub const SUPPORTED_VERSION_PATTERN: &str = r"^v1\.34\.[0-9]+$";
/// The version kubeup builds and tests.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.34.10";

/// A kubeup-managed Kubernetes cluster: its controller(s), network and
/// artifacts. Written by `kubeup init` as `cluster.yaml` and applied to the
/// cluster by `kubeup up`.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kubeup.dev",
    version = "v1alpha1",
    kind = "Cluster",
    status = "ClusterStatus",
    shortname = "kc",
    category = "kubeup",
    doc = "A kubeup-managed Kubernetes cluster: its controller hosts, network and artifacts.",
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.kubernetesVersion"
    ),
    printcolumn(
        name = "Controller",
        type_ = "string",
        json_path = ".spec.controllers[0].address"
    ),
    printcolumn(
        name = "Controllers",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ControllersReady\")].message"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"EndpointReady\")].message"
    ),
    printcolumn(name = "CNI", type_ = "string", json_path = ".spec.networking.cni"),
    printcolumn(
        name = "Certificates",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"CertificatesValid\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.networking.podCidr != self.networking.serviceCidr").message("networking.podCidr and networking.serviceCidr must differ"))]
#[x_kube(validation = Rule::new("(has(self.etcd) && size(self.etcd.external) > 0) || size(self.controllers) % 2 == 1").message("controllers: etcd needs an odd number of members (1, 3 or 5) to keep a majority"))]
#[x_kube(validation = Rule::new("!has(self.etcd) || size(self.etcd.external) % 2 == 1 || size(self.etcd.external) == 0").message("etcd.external: etcd needs an odd number of members (1, 3 or 5) to keep a majority"))]
pub struct ClusterSpec {
    /// Kubernetes version to run; only v1.34.x is supported.
    #[serde(default = "default_version")]
    #[schemars(pattern(SUPPORTED_VERSION_PATTERN))]
    pub kubernetes_version: String,
    /// The controller hosts (1, 3 or 5; with dedicated etcd hosts, 1 to
    /// 5): the control plane (and etcd, unless `etcd.external` lists its own
    /// hosts) runs on each, and each also registers as a tainted Node.
    #[schemars(length(min = 1, max = 5))]
    pub controllers: Vec<ControllerHost>,
    /// Where etcd runs: a member on each controller (default), or on
    /// dedicated hosts.
    #[serde(default, skip_serializing_if = "Etcd::is_stacked")]
    pub etcd: Etcd,
    /// Where clients reach the API: a virtual IP kubeup moves among the
    /// controllers, or a load balancer you run. Unset: the admin kubeconfig
    /// names the first controller. Nodes never depend on it: each reaches
    /// every apiserver through its own local load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ControlPlaneEndpoint>,
    /// Pod and Service networking.
    #[serde(default)]
    pub networking: Networking,
    /// Where the Kubernetes binaries and images come from.
    #[serde(default)]
    pub artifacts: Artifacts,
    /// Lifetimes of issued certificates.
    #[serde(default)]
    pub certificates: CertificateLifetimes,
    /// Settings of every node's kubelet (the controller's and the workers').
    #[serde(default)]
    pub kubelet: KubeletSettings,
    /// What `kubeup up` installs besides the pod network, DNS and metrics:
    /// persistent volumes (`storage`) and a way in from outside (`ingress`).
    #[serde(default)]
    pub addons: Addons,
}

fn default_version() -> String {
    DEFAULT_KUBERNETES_VERSION.into()
}

/// Where etcd runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    /// Dedicated etcd hosts (1, 3 or 5), reached over SSH like the
    /// controllers: kubeup runs etcd on them (and nothing else), and the
    /// apiservers use them instead of a member on each controller. A host's
    /// `name` is its etcd member name (default: its hostname).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub external: Vec<ControllerHost>,
}

impl Etcd {
    /// etcd runs on the controllers.
    pub fn is_stacked(&self) -> bool {
        self.external.is_empty()
    }
}

/// A machine the CLI reaches over SSH: a controller, or a dedicated etcd
/// host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerHost {
    /// IPv4 address or DNS name; the apiserver advertises this address.
    #[schemars(pattern(ADDRESS_PATTERN), length(min = 1, max = 253))]
    pub address: String,
    /// SSH port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// SSH user; non-root users go through `sudo -n`.
    #[serde(default = "default_user")]
    pub user: String,
    /// Path of the SSH private key on the workstation, relative to the
    /// cluster directory or absolute. Unset: the ssh-agent (`SSH_AUTH_SOCK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    /// How the host key is trusted (`Pin` or `AcceptNew` into the cluster
    /// directory's `known_hosts`).
    #[serde(default)]
    pub host_key: HostKeyTrust,
    /// Node name (an etcd host's member name); defaults to the machine's
    /// hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optional jump host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Bastion>,
}

impl crate::host::Reachable for ControllerHost {
    fn endpoint(&self) -> crate::host::Endpoint<'_> {
        crate::host::Endpoint {
            address: &self.address,
            port: self.port,
            user: &self.user,
            host_key: &self.host_key,
        }
    }
}

/// The address clients use for the API when there is more than one
/// apiserver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneEndpoint {
    /// `VirtualIP`: an IPv4 address kubeup's keepalived holds on one healthy
    /// controller (its `/readyz` tracked), on the controllers' network.
    /// `LoadBalancer`: an address or DNS name of a load balancer you run,
    /// forwarding TCP `port` to every controller's 6443.
    #[schemars(pattern(ADDRESS_PATTERN), length(min = 1, max = 253))]
    pub address: String,
    /// `VirtualIP` (default) or `LoadBalancer`.
    #[serde(default)]
    pub kind: EndpointKind,
    /// The endpoint's port; a virtual IP serves the apiservers' own 6443.
    #[serde(default = "default_api_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// VRRP router id (1-255) of the virtual IP, unique on its network.
    #[serde(default = "default_router_id")]
    #[schemars(range(min = 1, max = 255))]
    pub virtual_router_id: u8,
}

/// Who serves the [`ControlPlaneEndpoint`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum EndpointKind {
    #[default]
    VirtualIP,
    LoadBalancer,
}

/// The apiservers' port.
pub const API_PORT: u16 = 6443;

fn default_api_port() -> u16 {
    API_PORT
}
fn default_router_id() -> u8 {
    51
}

/// Pod and Service networking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    /// CIDR pods get addresses from; each node gets a /24 of it.
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: String,
    /// CIDR Service cluster IPs come from.
    #[serde(default = "default_service_cidr")]
    pub service_cidr: String,
    /// Cluster DNS Service IP; must be inside `serviceCidr`.
    #[serde(default = "default_cluster_dns")]
    pub cluster_dns: String,
    /// Cluster DNS domain.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// `flannel` (kubeup installs it) or `none` (bring your own CNI; nodes
    /// stay NotReady until one is installed).
    #[serde(default)]
    pub cni: Cni,
}

impl Default for Networking {
    fn default() -> Self {
        Self {
            pod_cidr: default_pod_cidr(),
            service_cidr: default_service_cidr(),
            cluster_dns: default_cluster_dns(),
            domain: default_domain(),
            cni: Cni::default(),
        }
    }
}

fn default_pod_cidr() -> String {
    "10.244.0.0/16".into()
}
fn default_service_cidr() -> String {
    "10.96.0.0/12".into()
}
fn default_cluster_dns() -> String {
    "10.96.0.10".into()
}
fn default_domain() -> String {
    "cluster.local".into()
}

/// The pod network kubeup installs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    #[default]
    Flannel,
    None,
}

/// Where binaries and images come from: a local bundle directory (built by
/// `cargo xtask bundle`) or a base URL with a pinned sha256 per file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.bundleDir) && has(self.baseUrl))").message("set either artifacts.bundleDir or artifacts.baseUrl, not both"))]
#[x_kube(validation = Rule::new("!has(self.baseUrl) || size(self.sha256) > 0").message("artifacts.baseUrl needs a pinned sha256 for every file"))]
pub struct Artifacts {
    /// A bundle directory on the workstation (with `bundle.json`). Unset and
    /// no `baseUrl`: `${KUBEUP_CACHE:-~/.cache/kubeup}/bundle/<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_dir: Option<String>,
    /// Base URL serving the bundle layout (`<baseUrl>/<file>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://"))]
    pub base_url: Option<String>,
    /// Pinned sha256 (hex) per file name, required with `baseUrl`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
}

/// Lifetimes of the certificates kubeup issues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateLifetimes {
    /// Days the CAs (cluster, etcd, front-proxy) are valid.
    #[serde(default = "default_ca_days")]
    #[schemars(range(min = 1, max = 36500))]
    pub ca_days: u32,
    /// Days leaf certificates (servers, clients) are valid.
    #[serde(default = "default_leaf_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub leaf_days: u32,
}

impl Default for CertificateLifetimes {
    fn default() -> Self {
        Self {
            ca_days: default_ca_days(),
            leaf_days: default_leaf_days(),
        }
    }
}

fn default_ca_days() -> u32 {
    3650
}
fn default_leaf_days() -> u32 {
    365
}

/// Settings of every node's kubelet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletSettings {
    /// For test machines with little disk only: no disk-pressure eviction
    /// and no image garbage collection. Off (the default), kubelets keep
    /// their upstream eviction thresholds and image GC, as production
    /// nodes need.
    #[serde(default)]
    pub relaxed_eviction: bool,
}

/// Add-ons kubeup installs into the cluster, each built into a local image
/// of the bundle (no registry) and following the bundle's version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addons {
    /// `local-path` (default): rancher's local-path-provisioner and the
    /// default StorageClass `local-path` (volumes in a directory of the node
    /// the pod runs on); `none`: no StorageClass.
    #[serde(default)]
    pub storage: Storage,
    /// `traefik` (default): Traefik v3 on every worker's host ports 80/443,
    /// serving Ingresses and the default IngressClass `traefik`; `none`: no
    /// ingress controller.
    #[serde(default)]
    pub ingress: Ingress,
    /// Settings of the `local-path` storage.
    #[serde(default)]
    pub local_path: LocalPathSettings,
    /// Settings of the `traefik` ingress.
    #[serde(default)]
    pub traefik: TraefikSettings,
}

/// The persistent-volume add-on.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Storage {
    #[default]
    #[serde(rename = "local-path")]
    LocalPath,
    #[serde(rename = "none")]
    None,
}

/// The ingress add-on.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Ingress {
    #[default]
    Traefik,
    None,
}

/// Where local-path keeps volumes on each node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalPathSettings {
    /// Absolute directory on every node; each volume is a `pvc-…`
    /// directory in it, removed when its PV is deleted (reclaim `Delete`)
    /// and by `kubeup reset`. Volumes of the StorageClass
    /// `local-path-retain` (reclaim `Retain`) live in its `retained/`
    /// subdirectory, which nothing of kubeup removes.
    #[serde(default = "default_local_path_dir")]
    #[schemars(
        pattern(r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$"),
        length(min = 2, max = 200)
    )]
    pub dir: String,
}

impl Default for LocalPathSettings {
    fn default() -> Self {
        Self {
            dir: default_local_path_dir(),
        }
    }
}

/// The default [`LocalPathSettings::dir`].
pub const DEFAULT_LOCAL_PATH_DIR: &str = "/var/lib/local-path-provisioner";

fn default_local_path_dir() -> String {
    DEFAULT_LOCAL_PATH_DIR.into()
}

/// How Traefik runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraefikSettings {
    /// Nodes Traefik runs on (labels they must all have). Empty (default):
    /// every node except the controllers. Label the nodes you want, e.g.
    /// `kubectl label node n1 ingress=true` with `{ingress: "true"}`; a
    /// labelled controller runs it too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Serve Traefik's dashboard and API on port 9000 of each of its pods
    /// (reached with `kubectl port-forward`, never on a host port). Off by
    /// default.
    #[serde(default)]
    pub dashboard: bool,
}

/// Observed state of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Conditions, e.g. `CertificatesValid`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
