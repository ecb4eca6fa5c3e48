//! The pod network kubeup installs (`networking.cni: flannel`): flannel per
//! node as a systemd unit with the Kubernetes subnet manager (each node's
//! subnet is its `spec.podCIDR`, so the controller-manager stays the one
//! allocator and no second store holds network state), VXLAN between nodes,
//! and a `bridge` + `host-local` CNI config per node from its podCIDR
//! (flannel's own CNI meta-plugin is not packaged anywhere kubeup builds
//! from; it would write the same bridge config).
//!
//! Why the subnet manager and not etcd: flannel then needs no etcd client
//! certificate on workers.
//!
//! flanneld has an identity of its own, never the kubelet's: it lists every
//! Node, and granting that to `system:nodes` would let every node read (and
//! with the Node authorizer's help patch) what it should not. On workers it
//! runs on a token of the `kube-system/flannel` ServiceAccount that the
//! operator requests bound to the Node and renews; on the controller on a
//! client certificate `kubeup up` issues (`kubeup:flannel`), like the
//! controller's kube-proxy.

use kubeup_crds::cluster::Cni;

use crate::pki::{CaKind, LeafSpec};

use super::certs::CertPlan;
use super::layout::{self, PKI};
use super::{HostFile, NodeInput, Unit, configs};

/// flanneld's kubeconfig (`--kubeconfig-file`), on every node.
pub const FLANNEL_KUBECONFIG: &str = "/etc/kubernetes/flannel.kubeconfig";
/// flanneld's credential on a worker: a token of [`FLANNEL_SERVICE_ACCOUNT`]
/// bound to the worker's Node, written (and renewed) by the operator.
pub const FLANNEL_TOKEN: &str = "/etc/kubernetes/pki/flannel.token";
/// The ServiceAccount behind [`FLANNEL_TOKEN`], bound to flannel's
/// ClusterRole by deploy/addons/flannel-rbac.yaml.
pub const FLANNEL_SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "flannel");
/// The user of the client certificate flanneld runs on on the controller,
/// bound to the same ClusterRole.
pub const FLANNEL_CONTROLLER_USER: &str = "kubeup:flannel";
/// flannel's network configuration (`--net-config-path`).
pub const FLANNEL_NET_CONF: &str = "/etc/kubernetes/flannel/net-conf.json";
/// Where flannel records the node's lease (`--subnet-file`).
pub const FLANNEL_SUBNET_ENV: &str = "/run/flannel/subnet.env";
/// The VXLAN device flannel creates (`reset` deletes it).
pub const FLANNEL_DEVICE: &str = "flannel.1";
/// Bytes VXLAN adds to a packet (outer IPv4 20 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14): pods get this much less than the host's 1500-byte MTU so
/// their packets fit into one datagram between nodes.
pub const VXLAN_OVERHEAD: u32 = 50;
const HOST_MTU: u32 = 1500;

/// Whether kubeup runs flannel on the nodes of a cluster with this setting.
pub fn runs_flannel(cni: Cni) -> bool {
    cni == Cni::Flannel
}

/// The units the pod network adds to a node.
pub fn units(cni: Cni) -> &'static [Unit] {
    if runs_flannel(cni) {
        &[Unit::Flannel]
    } else {
        &[]
    }
}

/// Files the pod network needs on every node, before its podCIDR is known:
/// flannel's network configuration and its unit. Nothing with `cni: none`.
pub fn node_files(cni: Cni, n: &NodeInput) -> Vec<HostFile> {
    files_for(cni, &FlannelNode::of(n))
}

/// What flannel's files are rendered from.
#[derive(Clone, Debug)]
pub struct FlannelNode<'a> {
    pub node_name: &'a str,
    /// The node's address: VXLAN runs over the interface holding it.
    pub address: &'a str,
    pub kubernetes_version: &'a str,
    /// The cluster's pod CIDR (`networking.podCidr`).
    pub cluster_pod_cidr: &'a str,
    /// What flanneld authenticates with.
    pub credential: FlannelCredential,
}

/// How flanneld authenticates to the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlannelCredential {
    /// A worker: the Node-bound ServiceAccount token in [`FLANNEL_TOKEN`].
    ServiceAccountToken,
    /// The controller: the client certificate of [`flannel_controller_cert`].
    ClientCertificate,
}

impl<'a> FlannelNode<'a> {
    pub fn of(n: &'a NodeInput) -> Self {
        Self {
            node_name: &n.node_name,
            address: &n.address,
            kubernetes_version: &n.kubernetes_version,
            cluster_pod_cidr: &n.pod_cidr,
            credential: FlannelCredential::ServiceAccountToken,
        }
    }
}

/// [`node_files`] for callers without a whole [`NodeInput`].
pub fn files_for(cni: Cni, n: &FlannelNode<'_>) -> Vec<HostFile> {
    if !runs_flannel(cni) {
        return vec![];
    }
    vec![
        flannel_net_conf(n.cluster_pod_cidr),
        flannel_kubeconfig(n),
        flannel_unit(n),
    ]
}

/// The certificates the pod network needs on the controller: flanneld's
/// client certificate with `cni: flannel`, nothing otherwise. `up` issues
/// and renews it with the controller's other certificates.
pub fn controller_certs(cni: Cni, days: u32) -> Vec<CertPlan> {
    if !runs_flannel(cni) {
        return vec![];
    }
    vec![flannel_controller_cert(days)]
}

/// flanneld's client certificate on the controller: user
/// [`FLANNEL_CONTROLLER_USER`], no group (so nothing but flannel's binding
/// applies to it).
pub fn flannel_controller_cert(days: u32) -> CertPlan {
    CertPlan {
        name: "flannel",
        ca: CaKind::Cluster,
        spec: LeafSpec::client(FLANNEL_CONTROLLER_USER, &[], days),
        cert_path: format!("{PKI}/flannel.crt"),
        key_path: format!("{PKI}/flannel.key"),
        affects: vec![Unit::Flannel],
    }
}

/// flanneld's kubeconfig. The token file is re-read by client-go (about
/// once a minute), so a renewed token needs no restart.
pub fn flannel_kubeconfig(n: &FlannelNode<'_>) -> HostFile {
    // The name of the cluster entry is local to this file.
    let cluster = "kubernetes";
    let ca = format!("{PKI}/ca.crt");
    let content = match n.credential {
        FlannelCredential::ServiceAccountToken => {
            let (ns, name) = FLANNEL_SERVICE_ACCOUNT;
            configs::kubeconfig_with_token_file(
                cluster,
                super::apilb::LOCAL_URL,
                &ca,
                &format!("system:serviceaccount:{ns}:{name}"),
                FLANNEL_TOKEN,
            )
        }
        FlannelCredential::ClientCertificate => {
            let cert = flannel_controller_cert(0);
            configs::kubeconfig_with_files(
                cluster,
                super::apilb::LOCAL_URL,
                &ca,
                FLANNEL_CONTROLLER_USER,
                &cert.cert_path,
                &cert.key_path,
            )
        }
    };
    HostFile::new(FLANNEL_KUBECONFIG, content, 0o600, &[Unit::Flannel])
}

/// The CNI config once the node's podCIDR is known; `None` with `cni:
/// none` (the user's CNI writes its own).
pub fn cni_conflist(cni: Cni, pod_cidr_of_node: &str) -> Option<HostFile> {
    runs_flannel(cni).then(|| flannel_conflist(pod_cidr_of_node))
}

/// The cluster DNS image, built by `cargo xtask bundle` (hack/bundle/coredns)
/// and imported into every node's containerd.
pub const COREDNS_IMAGE: &str = "kubeup.dev/coredns:v1.14.7";
/// The resource-metrics API server (`kubectl top`), built by `cargo xtask
/// bundle` (hack/bundle/metrics-server) and imported into every node's
/// containerd.
pub const METRICS_SERVER_IMAGE: &str = "kubeup.dev/metrics-server:v0.8.0";
/// The Secret (kubernetes.io/tls, in kube-system) holding metrics-server's
/// serving certificate: `tls.crt`/`tls.key`, signed by the cluster CA for
/// [`METRICS_SERVER_DNS_NAME`]. `kubeup up` creates it.
pub const METRICS_SERVER_TLS_SECRET: &str = "metrics-server-tls";
/// The name the API server checks metrics-server's certificate against
/// (the APIService's Service, `<name>.<namespace>.svc`).
pub const METRICS_SERVER_DNS_NAME: &str = "metrics-server.kube-system.svc";
/// The ConfigMap (in kube-system, key `ca.crt`) with the kubelet-serving CA
/// certificate that metrics-server verifies kubelets against.
pub const METRICS_SERVER_KUBELET_CA: &str = "kubeup-kubelet-serving-ca";
const FLANNEL_RBAC: &str = include_str!("../../../deploy/addons/flannel-rbac.yaml");
const COREDNS: &str = include_str!("../../../deploy/addons/coredns.yaml");
const METRICS_SERVER: &str = include_str!("../../../deploy/addons/metrics-server.yaml");

/// What `kubeup up` applies for the pod network and cluster DNS: with
/// flannel, its ServiceAccount and the RBAC that lets it (and the
/// controller's flannel certificate) watch all Nodes; CoreDNS behind `cluster_dns` in either case
/// (with `cni: none` it waits for the user's CNI, as with kubeadm).
pub fn addon_manifests(cni: Cni, cluster_dns: &str, domain: &str, controllers: usize) -> String {
    let mut out = String::new();
    if runs_flannel(cni) {
        out.push_str(FLANNEL_RBAC);
        out.push_str("---\n");
    }
    out.push_str(&coredns_manifest(
        cluster_dns,
        domain,
        COREDNS_IMAGE,
        controllers,
    ));
    out
}

/// The pod anti-affinity terms (under `podAntiAffinity:`) that keep the
/// replicas labelled `k8s-app: <app>` on different nodes: `required` where
/// there are nodes enough for every replica (several controllers), else
/// preferred. Preferred alone was not enough: while `up` converges, the
/// first controller is often the only Ready node when the pods are
/// scheduled, and every replica went there (seen in e2e_ha: that
/// controller stopped, and the add-on was gone until its pods were
/// evicted minutes later).
pub fn spread(app: &str, required: bool) -> String {
    let term = format!(
        "labelSelector:\n              matchLabels: {{k8s-app: {app}}}\n            topologyKey: kubernetes.io/hostname"
    );
    if required {
        format!("          requiredDuringSchedulingIgnoredDuringExecution:\n          - {term}")
    } else {
        format!(
            "          preferredDuringSchedulingIgnoredDuringExecution:\n          - weight: 100\n            podAffinityTerm:\n              {}",
            term.replace("\n  ", "\n    ")
        )
    }
}

/// deploy/addons/coredns.yaml with its placeholders filled in: its two
/// replicas on two of `controllers` where there are several.
pub fn coredns_manifest(
    cluster_dns: &str,
    domain: &str,
    image: &str,
    controllers: usize,
) -> String {
    COREDNS
        .replace("${SPREAD}", &spread("kube-dns", controllers > 1))
        .replace("${CLUSTER_DNS}", cluster_dns)
        .replace("${DOMAIN}", domain)
        .replace("${IMAGE}", image)
}

/// deploy/addons/metrics-server.yaml with its placeholders filled in:
/// `image` (normally [`METRICS_SERVER_IMAGE`]) and `ca_bundle_b64`, the
/// cluster CA certificate (PEM) in base64, which the API server trusts for
/// `v1beta1.metrics.k8s.io` (the serving certificate in the
/// [`METRICS_SERVER_TLS_SECRET`] Secret must be signed by it).
/// `kubelet_ca_b64` is the kubelet-serving CA certificate (PEM) in base64:
/// metrics-server verifies the kubelets' serving certificates against it
/// (ConfigMap [`METRICS_SERVER_KUBELET_CA`]), never against the cluster CA.
/// `controllers`: two replicas where there are two controllers (on two of
/// them: required anti-affinity), one otherwise.
pub fn metrics_server_manifest(
    image: &str,
    ca_bundle_b64: &str,
    kubelet_ca_b64: &str,
    controllers: usize,
) -> String {
    let replicas = controllers.clamp(1, 2);
    METRICS_SERVER
        .replace("${REPLICAS}", &replicas.to_string())
        .replace("${SPREAD}", &spread("metrics-server", replicas > 1))
        .replace("${IMAGE}", image)
        .replace("${CA_BUNDLE}", ca_bundle_b64)
        .replace("${KUBELET_CA_BUNDLE}", kubelet_ca_b64)
}

/// `Network` is the whole cluster pod CIDR: flannel routes every other
/// node's podCIDR inside it through the VXLAN device.
pub fn flannel_net_conf(cluster_pod_cidr: &str) -> HostFile {
    let content = format!(
        "{{\n  \"Network\": \"{cluster_pod_cidr}\",\n  \"EnableIPv6\": false,\n  \"Backend\": {{\"Type\": \"vxlan\"}}\n}}\n"
    );
    HostFile::new(FLANNEL_NET_CONF, content, 0o644, &[Unit::Flannel])
}

/// flanneld on its own kubeconfig ([`flannel_kubeconfig`]), VXLAN over the
/// node's address, masquerade for traffic leaving the pod network.
pub fn flannel_unit(n: &FlannelNode<'_>) -> HostFile {
    let bin = layout::bin(n.kubernetes_version, "flanneld");
    let content = format!(
        "# Written by kubeup; changes are overwritten by `kubeup up`.\n\
         [Unit]\nDescription=flannel pod network (kubeup)\nAfter=network-online.target\nWants=network-online.target\n\n\
         [Service]\nEnvironment=NODE_NAME={node}\n\
         ExecStart={bin} \\\n  --kube-subnet-mgr \\\n  --kubeconfig-file={FLANNEL_KUBECONFIG} \\\n  \
         --iface={addr} \\\n  --ip-masq \\\n  --net-config-path={FLANNEL_NET_CONF} \\\n  --subnet-file={FLANNEL_SUBNET_ENV}\n\
         Restart=always\nRestartSec=2\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        node = n.node_name,
        addr = n.address,
    );
    HostFile::new(
        format!("{}/{}", layout::SYSTEMD, Unit::Flannel.service()),
        content,
        0o644,
        &[Unit::Flannel],
    )
}

/// A bridge + host-local network for the node's podCIDR, its MTU leaving
/// room for VXLAN: pods on one node talk over `cni0`, other nodes' pods are
/// reached through the routes flannel installs.
pub fn flannel_conflist(pod_cidr_of_node: &str) -> HostFile {
    let mtu = HOST_MTU - VXLAN_OVERHEAD;
    let content = format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "kubeup",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "mtu": {mtu},
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{pod_cidr_of_node}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}]
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"#
    );
    HostFile::new(layout::CNI_CONFLIST, content, 0o644, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> NodeInput {
        super::super::sample_worker_input()
    }

    #[test]
    fn cni_none_installs_nothing() {
        assert!(node_files(Cni::None, &input()).is_empty());
        assert!(cni_conflist(Cni::None, "10.244.1.0/24").is_none());
        assert!(units(Cni::None).is_empty());
    }

    #[test]
    fn flannel_runs_on_its_own_credential_over_vxlan() {
        let files = node_files(Cni::Flannel, &input());
        assert_eq!(units(Cni::Flannel), &[Unit::Flannel]);
        let unit = files
            .iter()
            .find(|f| f.path == "/etc/systemd/system/flanneld.service")
            .expect("flanneld unit");
        let text = String::from_utf8_lossy(&unit.content);
        for want in [
            "Environment=NODE_NAME=worker-1\n",
            "ExecStart=/opt/kubeup/bundle/v1.34.10/bin/flanneld \\\n",
            "--kube-subnet-mgr",
            "--kubeconfig-file=/etc/kubernetes/flannel.kubeconfig",
            "--iface=198.18.0.11",
            "--net-config-path=/etc/kubernetes/flannel/net-conf.json",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(unit.affects.contains(&Unit::Flannel));
        let conf = files.iter().find(|f| f.path == FLANNEL_NET_CONF).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&conf.content).unwrap();
        assert_eq!(json["Network"], "10.244.0.0/16");
        assert_eq!(json["Backend"]["Type"], "vxlan");
    }

    #[test]
    fn a_workers_flannel_uses_its_service_account_token_file() {
        let files = node_files(Cni::Flannel, &input());
        let kc = files
            .iter()
            .find(|f| f.path == FLANNEL_KUBECONFIG)
            .expect("flannel's kubeconfig");
        let text = String::from_utf8_lossy(&kc.content);
        assert!(
            text.contains(&format!("tokenFile: {FLANNEL_TOKEN}\n")),
            "{text}"
        );
        assert!(text.contains("- name: system:serviceaccount:kube-system:flannel\n"));
        assert!(text.contains("server: https://127.0.0.1:7443\n"), "{text}");
        assert!(
            !text.contains("kubelet"),
            "never the kubelet's identity: {text}"
        );
        assert_eq!(kc.mode, 0o600);
        assert!(kc.affects.contains(&Unit::Flannel));
    }

    #[test]
    fn the_controllers_flannel_uses_a_certificate_of_its_own() {
        let input = input();
        let n = FlannelNode {
            credential: FlannelCredential::ClientCertificate,
            ..FlannelNode::of(&input)
        };
        let kc = flannel_kubeconfig(&n);
        let text = String::from_utf8_lossy(&kc.content);
        assert!(
            text.contains("client-certificate: /etc/kubernetes/pki/flannel.crt\n"),
            "{text}"
        );
        assert!(
            text.contains("client-key: /etc/kubernetes/pki/flannel.key\n"),
            "{text}"
        );
        assert!(!text.contains("tokenFile"), "{text}");
        let certs = controller_certs(Cni::Flannel, 365);
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].spec.common_name, FLANNEL_CONTROLLER_USER);
        assert!(
            certs[0].spec.organizations.is_empty(),
            "no group, no other rights"
        );
        assert!(controller_certs(Cni::None, 365).is_empty());
    }

    #[test]
    fn addons_fill_in_the_cluster_settings() {
        let y = addon_manifests(Cni::Flannel, "10.96.0.10", "cluster.local", 3);
        assert!(y.contains("name: kubeup:flannel"));
        assert!(y.contains("clusterIP: 10.96.0.10\n"));
        assert!(y.contains("kubernetes cluster.local in-addr.arpa"));
        assert!(y.contains(&format!("image: {COREDNS_IMAGE}\n")));
        // The comment names the placeholders; no line uses one any more.
        assert!(!y.lines().any(|l| !l.starts_with('#') && l.contains("${")));
        let none = addon_manifests(Cni::None, "10.96.0.10", "cluster.local", 1);
        assert!(!none.contains("flannel"));
        assert!(none.contains("name: coredns"));
        // CoreDNS's two replicas: on two controllers of three for sure,
        // both on a lone one.
        let deployment = |text: &str| -> serde_yaml_ng::Value {
            text.split("\n---\n")
                .map(|d| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(d).unwrap())
                .find(|d| d["kind"] == "Deployment")
                .unwrap()
        };
        let anti = |text: &str| {
            deployment(text)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].clone()
        };
        let required = &anti(&y)["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(
            required["labelSelector"]["matchLabels"]["k8s-app"],
            "kube-dns"
        );
        assert_eq!(required["topologyKey"], "kubernetes.io/hostname");
        let preferred = &anti(&none)["preferredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(preferred["weight"], 100);
        assert_eq!(
            preferred["podAffinityTerm"]["labelSelector"]["matchLabels"]["k8s-app"],
            "kube-dns"
        );
        // No forward: DNS never leaves the cluster.
        assert!(!y.lines().any(|l| l.trim_start().starts_with("forward")));
    }

    #[test]
    fn metrics_server_is_verified_both_ways() {
        let y = metrics_server_manifest(METRICS_SERVER_IMAGE, "Q0EK", "S1NFUlZJTkcK", 1);
        // The comment names the placeholders; no line uses one any more.
        assert!(
            !y.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("${"))
        );
        assert!(y.contains(&format!("image: {METRICS_SERVER_IMAGE}\n")));
        assert!(y.contains("caBundle: Q0EK\n"));
        // Verified TLS to the kubelets and from the API server, never skipped.
        assert!(!METRICS_SERVER.contains("--kubelet-insecure-tls"));
        assert!(!METRICS_SERVER.contains("insecureSkipTLSVerify"));
        // Kubelets are verified against the kubelet-serving CA, not the
        // cluster CA of the service account's ca.crt.
        assert!(y.contains("--kubelet-certificate-authority=/etc/kubelet-serving-ca/ca.crt"));
        assert!(!y.contains("serviceaccount/ca.crt"));
        assert!(y.contains("ca.crt: S1NFUlZJTkcK\n"));
        assert!(y.contains(&format!("secretName: {METRICS_SERVER_TLS_SECRET}\n")));
        assert!(y.contains("--tls-cert-file=/etc/metrics-server/tls.crt"));
        assert!(y.contains("--tls-private-key-file=/etc/metrics-server/tls.key"));
        assert!(y.contains("--secure-port=4443"));
        assert!(y.contains("imagePullPolicy: Never\n"));
    }

    #[test]
    fn the_metrics_server_manifest_parses() {
        let y = metrics_server_manifest(METRICS_SERVER_IMAGE, "Q0EK", "S1NFUlZJTkcK", 3);
        let docs: Vec<serde_yaml_ng::Value> = y
            .split("\n---\n")
            .map(|doc| serde_yaml_ng::from_str(doc).expect("valid YAML"))
            .collect();
        let kinds: Vec<&str> = docs
            .iter()
            .map(|d| d["kind"].as_str().expect("a kind"))
            .collect();
        for want in [
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRoleBinding",
            "RoleBinding",
            "Service",
            "Deployment",
            "APIService",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(&want), "{want} missing: {kinds:?}");
        }
        let of = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();
        // The API server checks the certificate for <service>.<namespace>.svc.
        let api = &of("APIService")["spec"];
        let svc = &api["service"];
        let dns = format!(
            "{}.{}.svc",
            svc["name"].as_str().unwrap(),
            svc["namespace"].as_str().unwrap()
        );
        assert_eq!(dns, METRICS_SERVER_DNS_NAME);
        assert_eq!(api["caBundle"], "Q0EK");
        assert!(api.get("insecureSkipTLSVerify").is_none());
        // Two replicas on two controllers, one of them always serving.
        assert_eq!(of("Deployment")["spec"]["replicas"], 2);
        assert_eq!(of("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);
        let single = metrics_server_manifest(METRICS_SERVER_IMAGE, "Q0EK", "S1NFUlZJTkcK", 1);
        assert!(single.contains("  replicas: 1\n"));
        let pod = &of("Deployment")["spec"]["template"]["spec"];
        // On two controllers for sure; one alone may share a node with its
        // rolling update's extra pod.
        let spread = &pod["affinity"]["podAntiAffinity"];
        let term = &spread["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(
            term["labelSelector"]["matchLabels"]["k8s-app"],
            "metrics-server"
        );
        let single: serde_yaml_ng::Value = single
            .split("\n---\n")
            .map(|doc| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(doc).unwrap())
            .find(|d| d["kind"] == "Deployment")
            .unwrap();
        let spread = &single["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
        assert_eq!(
            spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert_eq!(
            pod["volumes"][1]["secret"]["secretName"],
            METRICS_SERVER_TLS_SECRET
        );
        assert_eq!(pod["volumes"][1]["secret"]["defaultMode"], 0o440);
        let kubelet_ca = of("ConfigMap");
        assert_eq!(kubelet_ca["metadata"]["name"], METRICS_SERVER_KUBELET_CA);
        assert_eq!(kubelet_ca["metadata"]["namespace"], "kube-system");
        assert_eq!(kubelet_ca["binaryData"]["ca.crt"], "S1NFUlZJTkcK");
        assert_eq!(
            pod["volumes"][2]["configMap"]["name"],
            METRICS_SERVER_KUBELET_CA
        );
        let mounts = &pod["containers"][0]["volumeMounts"];
        assert_eq!(mounts[2]["mountPath"], "/etc/kubelet-serving-ca");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 4443);
    }

    #[test]
    fn the_conflist_is_the_node_subnet_with_room_for_vxlan() {
        let f = cni_conflist(Cni::Flannel, "10.244.3.0/24").unwrap();
        assert_eq!(f.path, layout::CNI_CONFLIST);
        let json: serde_json::Value = serde_json::from_slice(&f.content).unwrap();
        let bridge = &json["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["mtu"], 1450);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
    }
}
