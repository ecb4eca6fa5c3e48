//! The Cluster CRD's own rules, as a real kube-apiserver applies them:
//! etcd's member count stays odd wherever etcd runs, and dedicated etcd
//! hosts free the controller count.

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

mod common;

use kube::Api;
use kube::api::PostParams;
use kubeup_crds::Cluster;
use kubeup_testsupport::apiserver::ApiServer;

fn cluster(name: &str, controllers: usize, etcd_hosts: usize) -> Cluster {
    let hosts = |base: usize, n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| serde_json::json!({"address": format!("198.18.0.{}", base + i)}))
            .collect()
    };
    let mut spec = serde_json::json!({"controllers": hosts(11, controllers)});
    if etcd_hosts > 0 {
        spec["etcd"] = serde_json::json!({"external": hosts(21, etcd_hosts)});
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeup.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_counts_stay_odd_wherever_etcd_runs() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    let clusters: Api<Cluster> = Api::all(api.client.clone());
    let pp = PostParams::default();
    for (name, controllers, etcd_hosts, refused) in [
        ("stacked-three", 3, 0, None),
        (
            "stacked-two",
            2,
            0,
            Some("controllers: etcd needs an odd number"),
        ),
        ("two-on-dedicated-three", 2, 3, None),
        (
            "one-on-dedicated-two",
            1,
            2,
            Some("etcd.external: etcd needs an odd number"),
        ),
    ] {
        let result = clusters
            .create(&pp, &cluster(name, controllers, etcd_hosts))
            .await;
        match (refused, result) {
            (None, Ok(made)) => {
                // Stored as sent: the schema keeps spec.etcd.
                assert_eq!(made.spec.etcd.external.len(), etcd_hosts, "{name}");
            }
            (Some(why), Err(kube::Error::Api(e))) => {
                assert_eq!(e.code, 422, "{name}: {e:?}");
                assert!(e.message.contains(why), "{name}: {}", e.message);
            }
            (want, got) => panic!("{name}: expected refusal {want:?}, got {got:?}"),
        }
    }
}
