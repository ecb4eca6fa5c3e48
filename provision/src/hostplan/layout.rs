//! Where things live on a host. One place, so `up`, the operator and
//! `reset` agree.

/// Root of everything kubeup ships: the bundle per Kubernetes version.
pub const OPT: &str = "/opt/kubeup";
/// kubeup's own state on the host (installed-file list, image markers).
pub const STATE: &str = "/var/lib/kubeup";
/// On the controller: the operator's zstd copies of bundle files (a
/// hostPath, so they outlive the pod), owned by the operator's user.
pub const TRANSFER_CACHE: &str = "/var/lib/kubeup/transfer";
/// The user the operator runs as (the chart's `runAsUser`): its own uid,
/// not `nobody`'s. The controller's transfer cache is owned by it, and a
/// uid every unprivileged daemon shares could otherwise plant bytes there
/// for the operator to send to every new worker.
pub const OPERATOR_UID: u32 = 64521;
/// Every path kubeup wrote, one per line: what `reset` removes.
pub const INSTALLED_LIST: &str = "/var/lib/kubeup/installed.list";
pub const K8S: &str = "/etc/kubernetes";
pub const PKI: &str = "/etc/kubernetes/pki";
pub const ETCD_PKI: &str = "/etc/kubernetes/pki/etcd";
pub const SYSTEMD: &str = "/etc/systemd/system";
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
pub const CNI_CONFLIST: &str = "/etc/cni/net.d/10-kubeup.conflist";
pub const KUBELET_DIR: &str = "/var/lib/kubelet";
/// The kubelet's current client certificate and key (one PEM). The kubelet
/// rotates it in place, so it is where `--cert-dir` expects it.
pub const KUBELET_CLIENT_PEM: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
/// The kubelet's certificate directory.
pub const KUBELET_PKI_DIR: &str = "/var/lib/kubelet/pki";
pub const ETCD_DATA: &str = "/var/lib/etcd";
/// etcd's first-start settings (see `units::etcd_bootstrap_env`).
pub const ETCD_BOOTSTRAP_ENV: &str = "/etc/kubernetes/etcd-bootstrap.env";
/// kube-apiserver's authentication configuration (see
/// `configs::authentication_config`).
pub const AUTHENTICATION_CONFIG: &str = "/etc/kubernetes/authentication-config.yaml";
/// kube-apiserver's audit policy (see `configs::audit_policy`).
pub const AUDIT_POLICY: &str = "/etc/kubernetes/audit-policy.yaml";
/// kube-apiserver's audit log directory: made by systemd when the unit
/// starts (`LogsDirectory=`), 0700 (the log names every user and object).
pub const AUDIT_LOG_DIR: &str = "/var/log/kubernetes";
pub const AUDIT_LOG: &str = "/var/log/kubernetes/audit.log";
/// Directories removed whole by `reset` (data kubeup's components made).
pub const DATA_DIRS: [&str; 9] = [
    "/var/lib/etcd",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/lib/cni",
    "/etc/kubernetes",
    "/opt/kubeup",
    "/var/lib/kubeup",
    AUDIT_LOG_DIR,
];

/// The bundle directory on the host for a Kubernetes version.
pub fn bundle_dir(version: &str) -> String {
    format!("{OPT}/bundle/{version}")
}

pub fn bin(version: &str, name: &str) -> String {
    format!("{}/bin/{name}", bundle_dir(version))
}

pub fn cni_bin_dir(version: &str) -> String {
    format!("{}/cni", bundle_dir(version))
}
