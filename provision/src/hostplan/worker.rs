//! What a worker needs: the node components' configuration and units,
//! without any control-plane piece. The operator renders this for each
//! WorkerJoin; the certificates come from the CSR API, not from a CA key.

use super::configs::Eviction;
use super::{HostFile, NodeInput, Unit, configs, units};

/// kube-proxy's credential on a worker: a token of the `kube-system/kube-proxy`
/// ServiceAccount (bound to `system:node-proxier`), requested by the operator
/// through the TokenRequest API, bound to the worker's Node (it stops
/// working when the Node is deleted) and renewed by the operator long before
/// it expires; client-go re-reads the file, so kube-proxy needs no restart.
/// A client certificate would need the `kubernetes.io/kube-apiserver-client`
/// signer, and whoever may approve for that signer can mint any identity
/// (`system:masters` included).
pub const KUBE_PROXY_TOKEN: &str = "/etc/kubernetes/pki/kube-proxy.token";
/// The ServiceAccount behind [`KUBE_PROXY_TOKEN`].
pub const KUBE_PROXY_SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "kube-proxy");
/// The cluster CA certificate (kubeconfigs and the kubelet's client CA).
pub const CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";
/// Forwarding on at boot (the operator also sets it at once).
pub use super::node::SYSCTL_CONF;

/// Every file a worker needs, in a stable order: configs first, units last.
/// The cluster CA and the certificates are added by the caller, which gets
/// them from the API. The kubelet keeps its upstream eviction thresholds;
/// [`worker_files_with`] follows the Cluster's `spec.kubelet`.
pub fn worker_files(n: &NodeInput, cluster_name: &str) -> Vec<HostFile> {
    worker_files_with(n, cluster_name, Eviction::Upstream)
}

/// [`worker_files`] with the kubelet's eviction from the Cluster
/// (`Eviction::from_spec(&cluster.spec.kubelet)`).
pub fn worker_files_with(n: &NodeInput, cluster_name: &str, eviction: Eviction) -> Vec<HostFile> {
    let mut files = vec![
        // Serving certificate through the CSR API: the operator approves it
        // when it names only this host.
        configs::kubelet_config(n, true, eviction),
        configs::kubelet_resolv_conf(),
        configs::kube_proxy_config(n),
        configs::containerd_config(n),
    ];
    let [kubelet_kubeconfig, _] = configs::node_kubeconfigs(cluster_name, n);
    files.push(kubelet_kubeconfig);
    files.push(kube_proxy_kubeconfig(cluster_name));
    files.push(super::node::sysctl_file());
    files.extend(super::apilb::node_files(n));
    files.push(units::containerd(n));
    files.push(units::kubelet(n));
    files.push(units::kube_proxy(n));
    files
}

/// kube-proxy's kubeconfig on a worker: the ServiceAccount token file.
fn kube_proxy_kubeconfig(cluster_name: &str) -> HostFile {
    let (ns, name) = KUBE_PROXY_SERVICE_ACCOUNT;
    HostFile::new(
        "/etc/kubernetes/kube-proxy.kubeconfig",
        configs::kubeconfig_with_token_file(
            cluster_name,
            super::apilb::LOCAL_URL,
            CLUSTER_CA,
            &format!("system:serviceaccount:{ns}:{name}"),
            KUBE_PROXY_TOKEN,
        ),
        0o600,
        &[Unit::KubeProxy],
    )
}

/// The cluster CA certificate as a host file (from the `kube-root-ca.crt`
/// ConfigMap on the operator's side).
pub fn cluster_ca(ca_pem: &str) -> HostFile {
    HostFile::new(CLUSTER_CA, ca_pem, 0o644, &Unit::WORKER)
}

/// Paths a worker's kubeup install owns besides [`worker_files`]: what
/// `reset` removes.
pub fn worker_cert_paths() -> Vec<String> {
    vec![
        CLUSTER_CA.to_string(),
        KUBE_PROXY_TOKEN.to_string(),
        super::network::FLANNEL_TOKEN.to_string(),
        super::layout::KUBELET_CLIENT_PEM.to_string(),
        super::layout::CNI_CONFLIST.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> NodeInput {
        super::super::sample_worker_input()
    }

    #[test]
    fn a_worker_runs_no_control_plane() {
        let files = worker_files(&input(), "demo");
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for p in [
            "/etc/systemd/system/containerd.service",
            "/etc/systemd/system/kubelet.service",
            "/etc/systemd/system/kube-proxy.service",
            "/etc/kubernetes/kubelet.kubeconfig",
            "/etc/kubernetes/kube-proxy.kubeconfig",
            "/etc/kubernetes/kubelet-config.yaml",
            SYSCTL_CONF,
            "/etc/kubernetes/apiserver-lb.cfg",
            "/etc/systemd/system/kubeup-apiserver-lb.service",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        for f in &files {
            let text = String::from_utf8_lossy(&f.content);
            assert!(!text.contains("etcd"), "{} mentions etcd", f.path);
            assert!(!f.path.contains("kube-apiserver"), "{}", f.path);
        }
        let proxy_kc = files
            .iter()
            .find(|f| f.path.ends_with("kube-proxy.kubeconfig"))
            .unwrap();
        let text = String::from_utf8_lossy(&proxy_kc.content);
        assert!(
            text.contains(&format!("tokenFile: {KUBE_PROXY_TOKEN}\n")),
            "{text}"
        );
        assert!(!text.contains("client-key"), "{text}");
        assert!(text.contains("https://127.0.0.1:7443"));
    }

    #[test]
    fn the_worker_kubelet_bootstraps_its_serving_certificate() {
        let files = worker_files(&input(), "demo");
        let cfg = files
            .iter()
            .find(|f| f.path.ends_with("kubelet-config.yaml"))
            .unwrap();
        let text = String::from_utf8_lossy(&cfg.content);
        assert!(text.contains("\nserverTLSBootstrap: true\n"), "{text}");
        assert!(text.contains("rotateCertificates: true"), "{text}");
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(
            worker_files(&input(), "demo"),
            worker_files(&input(), "demo")
        );
    }
}
