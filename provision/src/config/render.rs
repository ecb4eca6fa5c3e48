//! Writing a cluster.yaml that a person can read: each section of the spec
//! with a comment saying what it is for.

use kubeup_crds::Cluster;

const HEADER: &str = "\
# kubeup cluster definition: a kubeup.dev/v1alpha1 Cluster document.
#   kubeup validate -f cluster.yaml   checks it (also done by every command)
#   kubeup up -f cluster.yaml         brings up the controller over SSH
# `kubectl explain clusters.spec` describes every field once the cluster runs.
";

/// Sections of the spec in order, each with its comment.
const SECTIONS: [(&str, &str); 9] = [
    (
        "kubernetesVersion",
        "Kubernetes version; kubeup supports v1.34.x (cgroup v1 hosts).",
    ),
    (
        "controllers",
        "The controllers (1, 3 or 5): etcd and the control plane run on each; each also\nregisters as a tainted Node. hostKey.policy is Pin (key required) or AcceptNew\n(first key is recorded in ./known_hosts, a later change is refused).\nprivateKeyFile is relative to this directory; leave it out to use ssh-agent.",
    ),
    (
        "etcd",
        "Dedicated etcd hosts (1, 3 or 5) instead of a member on each controller:\netcd.external lists them like controllers (address, user, hostKey, name = member\nname); kubeup runs etcd alone on them and the apiservers use them all.",
    ),
    (
        "controlPlaneEndpoint",
        "Where kubectl reaches the API: kind VirtualIP (kubeup's keepalived moves the\naddress to a healthy controller) or LoadBalancer (yours, forwarding port to\nevery controller's 6443). Unset: the first controller. Nodes do not use it:\neach reaches every apiserver through its own local load balancer.",
    ),
    (
        "networking",
        "Pod and Service networks. cni: flannel (installed by kubeup) or none (bring\nyour own; nodes stay NotReady until one runs).",
    ),
    (
        "artifacts",
        "Binaries and images: {} means the bundle built by `cargo xtask bundle` in\n${KUBEUP_CACHE:-~/.cache/kubeup}; or bundleDir: PATH; or baseUrl: URL with sha256: {file: sum}.",
    ),
    (
        "certificates",
        "Certificate lifetimes in days (leaves 1-3650, CAs 1-36500).",
    ),
    (
        "kubelet",
        "Every kubelet. relaxedEviction: true turns off disk-pressure eviction and image\nGC, for test machines with little disk only; keep it false in production.",
    ),
    (
        "addons",
        "Installed by `kubeup up`: storage: local-path (default StorageClass, volumes in\nlocalPath.dir on each node; local-path-retain keeps them) or none; ingress:\ntraefik (host ports 80/443 on every worker, or on the nodes with\ntraefik.nodeSelector's labels; dashboard off unless traefik.dashboard) or none.",
    ),
];

// Serializing a ClusterSpec (derived Serialize, string-keyed maps only) to a
// JSON value, and a JSON map to YAML, cannot fail.
#[allow(clippy::expect_used)]
pub fn render_cluster_yaml(cluster: &Cluster) -> String {
    let spec = serde_json::to_value(&cluster.spec).expect("spec serializes");
    let mut out = String::from(HEADER);
    out.push_str(&format!(
        "apiVersion: {}\nkind: Cluster\nmetadata:\n  name: {}\nspec:\n",
        kubeup_crds::API_VERSION,
        cluster.metadata.name.as_deref().unwrap_or("kubeup")
    ));
    for (key, comment) in SECTIONS {
        let Some(value) = spec.get(key) else { continue };
        let mut section = serde_json::Map::new();
        section.insert(key.to_string(), value.clone());
        let yaml = serde_yaml_ng::to_string(&section).expect("section serializes");
        for line in comment.lines() {
            out.push_str(&format!("  # {line}\n"));
        }
        for line in yaml.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
