//! The examples stay true to the code: they parse as the types and the
//! cluster.yaml validates.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::PathBuf;

use kubeup_crds::WorkerJoin;

fn examples() -> PathBuf {
    kubeup_testsupport::crate_dir().join("../examples")
}

#[test]
fn example_cluster_yaml_is_valid() {
    let loaded = kubeup_provision::config::load(&examples().join("cluster.yaml"))
        .expect("examples/cluster.yaml is valid");
    assert_eq!(loaded.name(), "homelab");
}

#[test]
fn example_ha_cluster_yaml_is_valid() {
    let loaded = kubeup_provision::config::load(&examples().join("cluster-ha.yaml"))
        .expect("examples/cluster-ha.yaml is valid");
    assert_eq!(loaded.cluster.spec.controllers.len(), 3);
    assert!(loaded.cluster.spec.control_plane_endpoint.is_some());
}

#[test]
fn example_dedicated_etcd_cluster_yaml_is_valid() {
    let loaded = kubeup_provision::config::load(&examples().join("cluster-etcd.yaml"))
        .expect("examples/cluster-etcd.yaml is valid");
    let spec = &loaded.cluster.spec;
    assert_eq!((spec.controllers.len(), spec.etcd.external.len()), (2, 3));
}

fn workerjoins_in(text: &str) -> Vec<WorkerJoin> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "WorkerJoin")
        .map(|v| serde_json::from_value(v).expect("a valid WorkerJoin"))
        .collect()
}

#[test]
fn example_workerjoins_parse() {
    let single =
        workerjoins_in(&std::fs::read_to_string(examples().join("workerjoin.yaml")).unwrap());
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].spec.ssh_secret_ref.name, "worker-ssh");
    let kustomization =
        std::fs::read_to_string(examples().join("gitops/kustomization.yaml")).unwrap();
    for line in kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
    {
        let text = std::fs::read_to_string(examples().join("gitops").join(line)).unwrap();
        assert_eq!(workerjoins_in(&text).len(), 1, "{line}");
    }
}
