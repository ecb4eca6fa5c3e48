//! The commented cluster.yaml `kubeup init` writes parses back unchanged.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::Path;

use kubeup_crds::Cluster;
use kubeup_crds::cluster::{ClusterSpec, ControllerHost};
use kubeup_provision::config::{parse, render_cluster_yaml};

#[test]
fn rendered_yaml_is_commented_and_round_trips() {
    let spec = ClusterSpec {
        kubernetes_version: "v1.34.10".into(),
        etcd: Default::default(),
        controllers: vec![ControllerHost {
            address: "198.18.0.11".into(),
            port: 22,
            user: "root".into(),
            ..Default::default()
        }],
        control_plane_endpoint: None,
        networking: Default::default(),
        artifacts: Default::default(),
        certificates: Default::default(),
        kubelet: Default::default(),
        addons: Default::default(),
    };
    let cluster = Cluster::new("demo", spec);
    let text = render_cluster_yaml(&cluster);
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            >= 10,
        "{text}"
    );
    let back = parse(&text, Path::new("/")).expect("the rendered file is valid");
    assert_eq!(back.spec, cluster.spec);
    assert_eq!(back.metadata.name.as_deref(), Some("demo"));
}
