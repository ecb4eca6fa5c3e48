//! systemd units. Flags are kubeadm's choices where kubeadm has one; every
//! TLS hop is authenticated (etcd peers and clients, apiserver, kubelet).

use super::layout::{self, ETCD_PKI, K8S, PKI};
use super::{ControllerInput, EtcdMember, HostFile, NodeInput, Unit};

fn unit(
    description: &str,
    after: &str,
    exec: &str,
    flags: &[String],
    extra_service: &str,
) -> String {
    let mut cmd = exec.to_string();
    for f in flags {
        cmd.push_str(" \\\n  ");
        cmd.push_str(f);
    }
    format!(
        "# Written by kubeup; changes are overwritten by `kubeup up`.\n\
         [Unit]\nDescription={description}\nAfter={after}\nWants={after}\n\n\
         [Service]\nExecStart={cmd}\nRestart=always\nRestartSec=2\n{extra_service}\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

fn file(u: Unit, content: String) -> HostFile {
    HostFile::new(
        format!("{}/{}", layout::SYSTEMD, u.service()),
        content,
        0o644,
        &[u],
    )
}

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

pub fn containerd(node: &NodeInput) -> HostFile {
    let v = &node.kubernetes_version;
    let bin_dir = format!("{}/bin", layout::bundle_dir(v));
    file(
        Unit::Containerd,
        unit(
            "containerd container runtime (kubeup)",
            "network-online.target",
            &layout::bin(v, "containerd"),
            &[flag("config", layout::CONTAINERD_CONFIG)],
            // The shim and runc are found through PATH.
            &format!(
                "Environment=PATH={bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
                 ExecStartPre=-/sbin/modprobe overlay\nType=notify\nDelegate=yes\nKillMode=process\n\
                 LimitNPROC=infinity\nLimitCORE=infinity\nLimitNOFILE=infinity\nTasksMax=infinity\nOOMScoreAdjust=-999\n"
            ),
        ),
    )
}

pub fn etcd(m: &EtcdMember) -> HostFile {
    let a = &m.address;
    let flags = vec![
        flag("name", &m.name),
        flag("data-dir", layout::ETCD_DATA),
        flag(
            "listen-client-urls",
            format!("https://127.0.0.1:2379,https://{a}:2379"),
        ),
        flag("advertise-client-urls", format!("https://{a}:2379")),
        flag("listen-peer-urls", format!("https://{a}:2380")),
        flag("initial-advertise-peer-urls", format!("https://{a}:2380")),
        flag("listen-metrics-urls", "http://127.0.0.1:2381"),
        flag("cert-file", format!("{ETCD_PKI}/server.crt")),
        flag("key-file", format!("{ETCD_PKI}/server.key")),
        flag("trusted-ca-file", format!("{ETCD_PKI}/ca.crt")),
        flag("client-cert-auth", true),
        flag("peer-cert-file", format!("{ETCD_PKI}/peer.crt")),
        flag("peer-key-file", format!("{ETCD_PKI}/peer.key")),
        flag("peer-trusted-ca-file", format!("{ETCD_PKI}/ca.crt")),
        flag("peer-client-cert-auth", true),
        flag("snapshot-count", 10000),
    ];
    file(
        Unit::Etcd,
        unit(
            "etcd key-value store (kubeup)",
            "network-online.target",
            &layout::bin(&m.kubernetes_version, "etcd"),
            &flags,
            &format!(
                "Type=notify\nLimitNOFILE=65536\nEnvironmentFile=-{}\n",
                layout::ETCD_BOOTSTRAP_ENV
            ),
        ),
    )
}

/// How this etcd member first starts: the members it starts with and
/// whether it joins a running cluster (`existing`, added as a learner
/// first) or starts a new one with them. etcd reads these only on its first
/// start (no data yet), so the file changes when controllers are added
/// without restarting a running member.
pub fn etcd_bootstrap_env(m: &EtcdMember) -> HostFile {
    let state = if m.joins_existing { "existing" } else { "new" };
    let content = format!(
        "# Written by kubeup: read by etcd on its first start only.\n\
         ETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_CLUSTER_STATE={state}\nETCD_INITIAL_CLUSTER_TOKEN=kubeup-{}\n",
        initial_cluster(m),
        m.cluster_name
    );
    HostFile::new(layout::ETCD_BOOTSTRAP_ENV, content, 0o644, &[])
}

/// `name=https://address:2380,…` for every member, this one included.
fn initial_cluster(m: &EtcdMember) -> String {
    m.members
        .iter()
        .map(|(name, address)| format!("{name}=https://{address}:2380"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn kube_apiserver(c: &ControllerInput) -> HostFile {
    let n = &c.node;
    let flags = vec![
        flag("advertise-address", &n.address),
        flag("secure-port", 6443),
        flag("allow-privileged", true),
        // Anonymous requests reach the health endpoints only (the load
        // balancers and keepalived probe /readyz without a credential);
        // every other anonymous request is refused before authorization.
        flag("authentication-config", layout::AUTHENTICATION_CONFIG),
        flag("authorization-mode", "Node,RBAC"),
        flag("enable-admission-plugins", "NodeRestriction"),
        flag("client-ca-file", format!("{PKI}/ca.crt")),
        flag("tls-cert-file", format!("{PKI}/apiserver.crt")),
        flag("tls-private-key-file", format!("{PKI}/apiserver.key")),
        flag("etcd-servers", c.etcd.servers()),
        flag("etcd-cafile", format!("{ETCD_PKI}/ca.crt")),
        flag("etcd-certfile", format!("{PKI}/apiserver-etcd-client.crt")),
        flag("etcd-keyfile", format!("{PKI}/apiserver-etcd-client.key")),
        flag(
            "kubelet-client-certificate",
            format!("{PKI}/apiserver-kubelet-client.crt"),
        ),
        flag(
            "kubelet-client-key",
            format!("{PKI}/apiserver-kubelet-client.key"),
        ),
        // Kubelet serving certificates are signed by their own CA (kubeup
        // issues the controller's; kube-controller-manager signs the workers'
        // kubelet-serving CSRs the operator approves), so logs/exec/
        // port-forward verify them, and a kubelet's certificate is never
        // trusted where the apiserver's is (clients trust ca.crt).
        flag(
            "kubelet-certificate-authority",
            format!("{PKI}/kubelet-serving-ca.crt"),
        ),
        flag("kubelet-preferred-address-types", "InternalIP,Hostname"),
        flag("service-cluster-ip-range", &c.service_cidr),
        flag(
            "service-account-issuer",
            format!("https://kubernetes.default.svc.{}", n.cluster_domain),
        ),
        flag("service-account-key-file", format!("{PKI}/sa.pub")),
        flag("service-account-signing-key-file", format!("{PKI}/sa.key")),
        flag(
            "encryption-provider-config",
            format!("{K8S}/encryption-config.yaml"),
        ),
        flag(
            "requestheader-client-ca-file",
            format!("{PKI}/front-proxy-ca.crt"),
        ),
        flag("requestheader-allowed-names", "front-proxy-client"),
        flag("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
        flag("requestheader-group-headers", "X-Remote-Group"),
        flag("requestheader-username-headers", "X-Remote-User"),
        flag(
            "proxy-client-cert-file",
            format!("{PKI}/front-proxy-client.crt"),
        ),
        flag(
            "proxy-client-key-file",
            format!("{PKI}/front-proxy-client.key"),
        ),
        flag("enable-aggregator-routing", true),
        // Who did what: Metadata level (never a request or response body,
        // so no Secret data), rotated by the apiserver itself.
        flag("audit-policy-file", layout::AUDIT_POLICY),
        flag("audit-log-path", layout::AUDIT_LOG),
        flag("audit-log-maxsize", 100),
        flag("audit-log-maxbackup", 5),
        flag("audit-log-maxage", 30),
    ];
    file(
        Unit::KubeApiserver,
        unit(
            "Kubernetes API server (kubeup)",
            "etcd.service",
            &layout::bin(&n.kubernetes_version, "kube-apiserver"),
            &flags,
            // Stopping it can take a minute while etcd goes away: stop it first
            // (After= orders stop in reverse) and do not wait forever.
            // systemd makes the audit log directory before each start.
            &format!(
                "TimeoutStopSec=20\nLimitNOFILE=65536\nLogsDirectory={}\nLogsDirectoryMode=0700\n",
                audit_logs_directory()
            ),
        ),
    )
}

/// `LogsDirectory=` takes a path relative to /var/log.
fn audit_logs_directory() -> &'static str {
    layout::AUDIT_LOG_DIR
        .strip_prefix("/var/log/")
        .unwrap_or("kubernetes")
}

/// What the controller-manager and scheduler share: their kubeconfig for
/// everything, serving on loopback only, leader election.
fn local_component_flags(name: &str) -> Vec<String> {
    let kubeconfig = format!("{K8S}/{name}.kubeconfig");
    vec![
        flag("kubeconfig", &kubeconfig),
        flag("authentication-kubeconfig", &kubeconfig),
        flag("authorization-kubeconfig", &kubeconfig),
        flag("bind-address", "127.0.0.1"),
        flag("leader-elect", true),
    ]
}

pub fn kube_controller_manager(c: &ControllerInput) -> HostFile {
    let mut flags = local_component_flags("controller-manager");
    flags.extend([
        flag("use-service-account-credentials", true),
        // Each controller starts with its own ServiceAccount's client (a
        // few requests each), one after another, through the manager's
        // client-side rate limit; at the default 20/s (burst 30) that was
        // ~5 s of every cold start before any Deployment got a ReplicaSet.
        flag("kube-api-qps", 100),
        flag("kube-api-burst", 200),
        flag("controllers", "*,bootstrapsigner,tokencleaner"),
        flag("client-ca-file", format!("{PKI}/ca.crt")),
        flag(
            "requestheader-client-ca-file",
            format!("{PKI}/front-proxy-ca.crt"),
        ),
        flag("root-ca-file", format!("{PKI}/ca.crt")),
        flag("service-account-private-key-file", format!("{PKI}/sa.key")),
        // The CSR API signs with one CA per signer: kubelet serving
        // certificates with the kubelet-serving CA, client certificates
        // (kubelets', other clients') with the cluster CA. kube-controller-
        // manager refuses the generic --cluster-signing-{cert,key}-file next
        // to a per-signer flag, so every signer is named; legacy-unknown
        // (v1beta1 only, gone since 1.22) is not signed. The CA keys stay on
        // this host.
        flag(
            "cluster-signing-kubelet-serving-cert-file",
            format!("{PKI}/kubelet-serving-ca.crt"),
        ),
        flag(
            "cluster-signing-kubelet-serving-key-file",
            format!("{PKI}/kubelet-serving-ca.key"),
        ),
        flag(
            "cluster-signing-kubelet-client-cert-file",
            format!("{PKI}/ca.crt"),
        ),
        flag(
            "cluster-signing-kubelet-client-key-file",
            format!("{PKI}/ca.key"),
        ),
        flag(
            "cluster-signing-kube-apiserver-client-cert-file",
            format!("{PKI}/ca.crt"),
        ),
        flag(
            "cluster-signing-kube-apiserver-client-key-file",
            format!("{PKI}/ca.key"),
        ),
        flag("allocate-node-cidrs", true),
        flag("cluster-cidr", &c.node.pod_cidr),
        flag("node-cidr-mask-size", 24),
        flag("service-cluster-ip-range", &c.service_cidr),
    ]);
    file(
        Unit::KubeControllerManager,
        unit(
            "Kubernetes controller manager (kubeup)",
            "kube-apiserver.service",
            &layout::bin(&c.node.kubernetes_version, "kube-controller-manager"),
            &flags,
            "",
        ),
    )
}

pub fn kube_scheduler(c: &ControllerInput) -> HostFile {
    let flags = local_component_flags("scheduler");
    file(
        Unit::KubeScheduler,
        unit(
            "Kubernetes scheduler (kubeup)",
            "kube-apiserver.service",
            &layout::bin(&c.node.kubernetes_version, "kube-scheduler"),
            &flags,
            "",
        ),
    )
}

pub fn kubelet(n: &NodeInput) -> HostFile {
    let mut flags = vec![
        flag("config", format!("{K8S}/kubelet-config.yaml")),
        flag("kubeconfig", format!("{K8S}/kubelet.kubeconfig")),
        flag("cert-dir", format!("{}/pki", layout::KUBELET_DIR)),
        flag("node-ip", &n.address),
        flag("hostname-override", &n.node_name),
    ];
    if !n.register_taints.is_empty() {
        flags.push(flag("register-with-taints", n.register_taints.join(",")));
    }
    file(
        Unit::Kubelet,
        unit(
            "Kubernetes node agent (kubeup)",
            "containerd.service",
            &layout::bin(&n.kubernetes_version, "kubelet"),
            &flags,
            "",
        ),
    )
}

pub fn kube_proxy(n: &NodeInput) -> HostFile {
    file(
        Unit::KubeProxy,
        unit(
            "Kubernetes service proxy (kubeup)",
            "network-online.target",
            &layout::bin(&n.kubernetes_version, "kube-proxy"),
            &[
                flag("config", format!("{K8S}/kube-proxy-config.yaml")),
                flag("hostname-override", &n.node_name),
            ],
            "",
        ),
    )
}
