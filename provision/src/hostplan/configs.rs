//! Configuration files for the node components.

use base64::Engine;

use super::layout::{self, K8S, PKI};
use super::{HostFile, NodeInput, Unit};

/// A kubeconfig that points at certificate files (not inline data), so a
/// rotated certificate never changes the kubeconfig itself.
pub fn kubeconfig_with_files(
    cluster: &str,
    server: &str,
    ca_file: &str,
    user: &str,
    cert_file: &str,
    key_file: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority: {ca_file}\n\
         users:\n- name: {user}\n  user:\n    client-certificate: {cert_file}\n    client-key: {key_file}\n\
         contexts:\n- name: {user}@{cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
         current-context: {user}@{cluster}\n"
    )
}

/// A kubeconfig whose user is a bearer token read from `token_file`:
/// client-go re-reads it, so a renewed token needs no restart and the
/// kubeconfig itself holds no secret.
pub fn kubeconfig_with_token_file(
    cluster: &str,
    server: &str,
    ca_file: &str,
    user: &str,
    token_file: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority: {ca_file}\n\
         users:\n- name: {user}\n  user:\n    tokenFile: {token_file}\n\
         contexts:\n- name: {user}@{cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
         current-context: {user}@{cluster}\n"
    )
}

/// A kubeconfig with everything inline: for the admin on the workstation.
pub fn kubeconfig_inline(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         users:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
         contexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
         current-context: {cluster}\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem)
    )
}

/// The kubeconfigs a controller's components use (local apiserver).
pub fn controller_kubeconfigs(cluster: &str) -> Vec<HostFile> {
    let local = "https://127.0.0.1:6443";
    let ca = format!("{PKI}/ca.crt");
    vec![
        HostFile::new(
            format!("{K8S}/controller-manager.kubeconfig"),
            kubeconfig_with_files(
                cluster,
                local,
                &ca,
                "system:kube-controller-manager",
                &format!("{PKI}/controller-manager.crt"),
                &format!("{PKI}/controller-manager.key"),
            ),
            0o600,
            &[Unit::KubeControllerManager],
        ),
        HostFile::new(
            format!("{K8S}/scheduler.kubeconfig"),
            kubeconfig_with_files(
                cluster,
                local,
                &ca,
                "system:kube-scheduler",
                &format!("{PKI}/scheduler.crt"),
                &format!("{PKI}/scheduler.key"),
            ),
            0o600,
            &[Unit::KubeScheduler],
        ),
    ]
}

/// The kubeconfigs every node's kubelet and kube-proxy use.
pub fn node_kubeconfigs(cluster: &str, n: &NodeInput) -> [HostFile; 2] {
    let ca = format!("{PKI}/ca.crt");
    [
        HostFile::new(
            format!("{K8S}/kubelet.kubeconfig"),
            kubeconfig_with_files(
                cluster,
                super::apilb::LOCAL_URL,
                &ca,
                &format!("system:node:{}", n.node_name),
                layout::KUBELET_CLIENT_PEM,
                layout::KUBELET_CLIENT_PEM,
            ),
            0o600,
            &[Unit::Kubelet],
        ),
        HostFile::new(
            format!("{K8S}/kube-proxy.kubeconfig"),
            kubeconfig_with_files(
                cluster,
                super::apilb::LOCAL_URL,
                &ca,
                "system:kube-proxy",
                &format!("{PKI}/kube-proxy.crt"),
                &format!("{PKI}/kube-proxy.key"),
            ),
            0o600,
            &[Unit::KubeProxy],
        ),
    ]
}

/// The kubelet's configuration. `server_tls_bootstrap`: the kubelet asks
/// for its serving certificate through a `kubernetes.io/kubelet-serving`
/// CSR (someone must approve it: the operator does for the workers it
/// joins); otherwise the certificate kubeup issued (`kubelet-serving` of
/// the controller's certificates). Never a self-signed one: the apiserver
/// verifies kubelets against the cluster CA.
/// When the kubelet reclaims disk and memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Eviction {
    /// The kubelet's own defaults: evict pods before memory or disk run
    /// out, collect unused images above 85% disk use.
    #[default]
    Upstream,
    /// No disk-pressure eviction and no image GC: for test machines with
    /// little disk (`spec.kubelet.relaxedEviction`, the sandbox's setting).
    Relaxed,
}

impl Eviction {
    pub fn from_spec(kubelet: &kubeup_crds::cluster::KubeletSettings) -> Self {
        if kubelet.relaxed_eviction {
            Eviction::Relaxed
        } else {
            Eviction::Upstream
        }
    }

    fn lines(self) -> &'static str {
        match self {
            // Omitted, not restated: the kubelet's defaults stay whatever
            // this kubelet version's are.
            Eviction::Upstream => {
                "# Eviction thresholds and image GC: the kubelet's upstream defaults.\n"
            }
            Eviction::Relaxed => {
                "# relaxedEviction (test machines with little disk): never evict for disk, no image GC.\n\
                 evictionHard: {nodefs.available: \"0%\", nodefs.inodesFree: \"0%\", imagefs.available: \"0%\"}\n\
                 imageGCHighThresholdPercent: 100\n"
            }
        }
    }
}

pub fn kubelet_config(n: &NodeInput, server_tls_bootstrap: bool, eviction: Eviction) -> HostFile {
    let serving = if server_tls_bootstrap {
        "# Serving certificate through the CSR API (kubelet-serving signer).\nserverTLSBootstrap: true\n".to_string()
    } else {
        format!(
            "# Serving certificate issued by kubeup from the cluster CA.\n\
             tlsCertFile: {PKI}/kubelet-serving.crt\ntlsPrivateKeyFile: {PKI}/kubelet-serving.key\n"
        )
    };
    let content = format!(
        "# Written by kubeup.\n\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
# Hosts here run cgroup v1; v1.34 still allows it when asked.
failCgroupV1: false
failSwapOn: false
clusterDNS: [{dns}]
clusterDomain: {domain}
resolvConf: {K8S}/resolv.conf
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
staticPodPath: {K8S}/manifests
rotateCertificates: true
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {PKI}/ca.crt}}
authorization: {{mode: Webhook}}
{eviction}{serving}",
        dns = n.cluster_dns,
        domain = n.cluster_domain,
        eviction = eviction.lines(),
    );
    HostFile::new(
        format!("{K8S}/kubelet-config.yaml"),
        content,
        0o644,
        &[Unit::Kubelet],
    )
}

/// Pods get this resolv.conf's search/options; the host's own may name
/// resolvers pods must not use. CoreDNS answers cluster names.
pub fn kubelet_resolv_conf() -> HostFile {
    HostFile::new(
        format!("{K8S}/resolv.conf"),
        "# Written by kubeup: no upstream resolver.\noptions ndots:5\n",
        0o644,
        &[Unit::Kubelet],
    )
}

pub fn kube_proxy_config(n: &NodeInput) -> HostFile {
    let content = format!(
        "# Written by kubeup.\n\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {K8S}/kube-proxy.kubeconfig
mode: iptables
clusterCIDR: {pod_cidr}
# conntrack sysctls are not per network namespace: leave the host's alone.
conntrack:
  maxPerCore: 0
",
        pod_cidr = n.pod_cidr
    );
    HostFile::new(
        format!("{K8S}/kube-proxy-config.yaml"),
        content,
        0o644,
        &[Unit::KubeProxy],
    )
}

pub fn containerd_config(n: &NodeInput) -> HostFile {
    let content = format!(
        "# Written by kubeup.\n\
version = 2
[plugins]
  [plugins.\"io.containerd.grpc.v1.cri\"]
    sandbox_image = \"{pause}\"
    # Some hosts (containers, restricted VMs) lack CAP_SYS_RESOURCE: never
    # lower a container's OOM score below the runtime's own.
    restrict_oom_score_adj = true
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
      runtime_type = \"io.containerd.runc.v2\"
      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]
        SystemdCgroup = true
    [plugins.\"io.containerd.grpc.v1.cri\".cni]
      bin_dir = \"{cni}\"
      conf_dir = \"{conf}\"
",
        pause = n.pause_image,
        cni = layout::cni_bin_dir(&n.kubernetes_version),
        conf = layout::CNI_CONF_DIR,
    );
    HostFile::new(
        layout::CONTAINERD_CONFIG,
        content,
        0o644,
        &[Unit::Containerd],
    )
}

/// kube-apiserver's authentication configuration: anonymous requests are
/// authenticated for the health endpoints only (`/readyz`, `/livez`,
/// `/healthz`), which the node-local load balancers and keepalived probe
/// without a credential. Any other anonymous request is refused with 401,
/// whatever RBAC says.
pub fn authentication_config() -> HostFile {
    const CONFIG: &str = "\
# Written by kubeup.
apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /readyz
  - path: /livez
  - path: /healthz
";
    HostFile::new(
        layout::AUTHENTICATION_CONFIG,
        CONFIG,
        0o644,
        &[Unit::KubeApiserver],
    )
}

/// kube-apiserver's audit policy. The first matching rule decides, so the
/// sensitive resources come first: whatever is added below, Secrets,
/// ConfigMaps, tokens and certificate requests are only ever logged at
/// Metadata (who, what, when; never a body). Then the noisy read-only
/// system traffic is dropped; everything else is Metadata too, so nothing
/// in the log carries request or response bodies.
pub fn audit_policy() -> HostFile {
    const POLICY: &str = "\
# Written by kubeup.
apiVersion: audit.k8s.io/v1
kind: Policy
# One entry per request (when it completes), not one more when it arrives.
omitStages: [RequestReceived]
rules:
# Bodies may hold Secret data, tokens or keys: metadata only, always.
- level: Metadata
  resources:
  - group: \"\"
    resources: [secrets, configmaps, serviceaccounts/token]
  - group: authentication.k8s.io
    resources: [tokenreviews]
  - group: certificates.k8s.io
    resources: [certificatesigningrequests, certificatesigningrequests/approval, certificatesigningrequests/status]
# Noisy read-only system traffic.
- level: None
  nonResourceURLs: [/healthz*, /readyz*, /livez*, /version, /metrics]
- level: None
  resources:
  - group: \"\"
    resources: [events]
  - group: events.k8s.io
    resources: [events]
- level: None
  userGroups: [\"system:nodes\", \"system:serviceaccounts:kube-system\"]
  verbs: [get, list, watch, update]
  resources:
  - group: coordination.k8s.io
    resources: [leases]
- level: None
  users: [\"system:apiserver\", \"system:kube-controller-manager\", \"system:kube-scheduler\"]
  verbs: [get, list, watch, update]
  resources:
  - group: coordination.k8s.io
    resources: [leases]
- level: None
  users: [\"system:kube-proxy\"]
  verbs: [watch]
  resources:
  - group: \"\"
    resources: [endpoints, services, services/status]
  - group: discovery.k8s.io
    resources: [endpointslices]
# Everything else: who did what, without bodies.
- level: Metadata
";
    HostFile::new(layout::AUDIT_POLICY, POLICY, 0o600, &[Unit::KubeApiserver])
}

/// Secrets encrypted at rest with the key from `kubeup init` (32 bytes,
/// what secretbox needs). secretbox (XSalsa20-Poly1305, authenticated)
/// writes; aescbc with the same key only reads, so Secrets an older kubeup
/// wrote with aescbc still decrypt until they are rewritten; identity reads
/// whatever was stored before encryption was on.
pub fn encryption_config(key_b64: &str) -> HostFile {
    let key = key_b64.trim();
    let content = format!(
        "apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n\
         - resources: [secrets]\n\
         \x20 providers:\n\
         \x20 - secretbox:\n\
         \x20     keys:\n\
         \x20     - name: key1\n\
         \x20       secret: {key}\n\
         \x20 # Read-only fallback for Secrets written before secretbox.\n\
         \x20 - aescbc:\n\
         \x20     keys:\n\
         \x20     - name: key1\n\
         \x20       secret: {key}\n\
         \x20 - identity: {{}}\n"
    );
    HostFile::new(
        format!("{K8S}/encryption-config.yaml"),
        content,
        0o600,
        &[Unit::KubeApiserver],
    )
}
