//! Rendered units and configuration compared with checked-in files, so a
//! change in what lands on hosts shows up in review. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p kubeup-provision --test hostplan_golden`.

use std::path::{Path, PathBuf};

use kubeup_crds::cluster::Cni;
use kubeup_provision::hostplan::{
    ControllerInput, HostFile, NodeInput, configs, network, units, worker,
};

fn node() -> NodeInput {
    NodeInput {
        node_name: "ctl-1".into(),
        address: "192.0.2.10".into(),
        kubernetes_version: "v1.34.10".into(),
        api_server: "https://192.0.2.10:6443".into(),
        cluster_dns: "10.96.0.10".into(),
        cluster_domain: "cluster.local".into(),
        pod_cidr: "10.244.0.0/16".into(),
        pause_image: "registry.k8s.io/pause:3.10.1".into(),
        register_taints: vec!["node-role.kubernetes.io/control-plane:NoSchedule".into()],
    }
}

fn rendered() -> Vec<(String, HostFile)> {
    let c = ControllerInput {
        node: node(),
        cluster_name: "demo".into(),
        service_cidr: "10.96.0.0/12".into(),
    };
    let mut files = vec![
        units::containerd(&c.node),
        units::etcd(&c),
        units::kube_apiserver(&c),
        units::kube_controller_manager(&c),
        units::kube_scheduler(&c),
        units::kubelet(&c.node),
        units::kube_proxy(&c.node),
        configs::kubelet_config(&c.node, false),
        configs::kube_proxy_config(&c.node),
        configs::containerd_config(&c.node),
        network::cni_conflist(Cni::Flannel, "10.244.1.0/24").unwrap(),
        configs::encryption_config("c2VjcmV0LWtleS1ub3QtcmVhbC0zMi1ieXRlcy0hISE="),
    ];
    files.extend(configs::controller_kubeconfigs("demo"));
    files.extend(configs::node_kubeconfigs("demo", &c.node));
    let mut out: Vec<(String, HostFile)> = files
        .into_iter()
        .map(|f| (format!("controller{}", f.path.replace('/', "_")), f))
        .collect();
    let mut w = node();
    w.node_name = "worker-1".into();
    w.address = "192.0.2.11".into();
    w.register_taints.clear();
    out.extend(
        worker::worker_files(&w, "demo")
            .into_iter()
            .map(|f| (format!("worker{}", f.path.replace('/', "_")), f)),
    );
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn rendered_files_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatched = vec![];
    for (name, file) in rendered() {
        let path = golden_dir().join(&name);
        if update {
            std::fs::write(&path, &file.content).unwrap();
            continue;
        }
        let expected = std::fs::read(&path).unwrap_or_default();
        if expected != file.content {
            mismatched.push(name);
        }
    }
    assert!(
        mismatched.is_empty(),
        "rendering changed for {mismatched:?}: review, then regenerate with UPDATE_GOLDEN=1"
    );
}

#[test]
fn rendering_is_deterministic() {
    let a: Vec<Vec<u8>> = rendered().into_iter().map(|(_, f)| f.content).collect();
    let b: Vec<Vec<u8>> = rendered().into_iter().map(|(_, f)| f.content).collect();
    assert_eq!(a, b);
}
