//! Deleting a served namespace, or the WorkerJoin CRD, is not "take these
//! workers out": the WorkerJoins are released (nothing stranded in
//! Terminating, though their SSH Secrets are already gone) and their hosts
//! and Nodes are left running, neither drained nor reset. Against a real
//! kube-apiserver with the operator as its ServiceAccount; the joined
//! machines are simulated by status and Nodes (no SSH: the addresses are
//! loopback with a closed port, and any attempt would fail, not pass).

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_operator::context::Settings;
use kubeup_testsupport::apiserver::ApiServer;

const TEAM: &str = "team-x";

/// A WorkerJoin that joined `node` (status as the operator leaves it) and
/// its Node, owned by it.
async fn joined(api: &ApiServer, ns: &str, name: &str, node: &str, port: u16) {
    let wjs: Api<WorkerJoin> = Api::namespaced(api.client.clone(), ns);
    let wj: WorkerJoin = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeup.dev/v1alpha1", "kind": "WorkerJoin",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"address": "127.0.0.1", "port": port, "sshSecretRef": {"name": "gone"},
                 "hostKey": {"policy": "AcceptNew"}, "nodeName": node}
    }))
    .unwrap();
    wjs.create(&PostParams::default(), &wj).await.unwrap();
    wjs.patch_status(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "kubeup.dev/v1alpha1", "kind": "WorkerJoin",
            "status": {"phase": "Ready", "nodeName": node, "observedGeneration": 1,
                       "phaseDurations": {"Preflight": 0.1, "Installing": 1.0}}
        })),
    )
    .await
    .unwrap();
    let owner = format!("{ns}.{name}");
    let n: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": node,
                     "labels": {"kubeup.dev/workerjoin": owner},
                     "annotations": {"kubeup.dev/workerjoin": owner}}
    }))
    .unwrap();
    Api::<Node>::all(api.client.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
    // The operator has taken it on (its finalizer is on).
    common::wait_for(&wjs, name, "the finalizer", |w| {
        w.finalizers().iter().any(|f| f == "kubeup.dev/cleanup")
    })
    .await;
}

async fn node_untouched(api: &ApiServer, node: &str) {
    let n = Api::<Node>::all(api.client.clone())
        .get(node)
        .await
        .unwrap_or_else(|e| panic!("Node {node} is still there: {e}"));
    assert_ne!(
        n.spec.and_then(|s| s.unschedulable),
        Some(true),
        "{node} was not cordoned or drained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_and_crd_teardown_release_workerjoins_and_leave_the_fleet_running() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    common::kubectl(&api, &["apply", "-f", "-"], Some(common::CLUSTER));
    common::kubectl(&api, &["create", "namespace", TEAM], None);
    // The chart with watchNamespaces=[kubeup-system, team-x] would add
    // this Role in team-x.
    let role = [
        "-n",
        TEAM,
        "create",
        "role",
        "kubeup-operator-secrets",
        "--verb=get,list,watch",
        "--resource=secrets",
    ];
    common::kubectl(&api, &role, None);
    let binding = [
        "-n",
        TEAM,
        "create",
        "rolebinding",
        "kubeup-operator-secrets",
        "--role=kubeup-operator-secrets",
        "--serviceaccount=kubeup-system:kubeup-operator",
    ];
    common::kubectl(&api, &binding, None);

    let sa = common::operator_client(&api).await;
    let settings = Settings {
        namespace: common::NAMESPACE.into(),
        namespaces: vec![common::NAMESPACE.into(), TEAM.into()],
        allow_loopback: true,
        ..Settings::default()
    };
    let operator = common::spawn_operator(sa, settings);

    // 1. The namespace goes: its WorkerJoin is released, its Node stays.
    joined(&api, TEAM, "w-team", "node-team", 1).await;
    Api::<Namespace>::all(api.client.clone())
        .delete(TEAM, &Default::default())
        .await
        .unwrap();
    // The harness runs no namespace controller: delete what it would.
    let team: Api<WorkerJoin> = Api::namespaced(api.client.clone(), TEAM);
    team.delete("w-team", &Default::default()).await.unwrap();
    common::eventually("the WorkerJoin released", Duration::from_secs(60), || {
        let team = team.clone();
        async move {
            match team.get_opt("w-team").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(w) => Err(format!("{:?}", w.status)),
            }
        }
    })
    .await;
    node_untouched(&api, "node-team").await;

    // 2. The CRD goes: every WorkerJoin is released, every Node stays.
    joined(&api, common::NAMESPACE, "w-own", "node-own", 3).await;
    common::kubectl(
        &api,
        &["delete", "crd", "workerjoins.kubeup.dev", "--wait=false"],
        None,
    );
    common::eventually("the CRD gone", Duration::from_secs(90), || async {
        let out = api
            .kubectl()
            .args(["get", "crd", "workerjoins.kubeup.dev"])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Err(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Ok(())
        }
    })
    .await;
    node_untouched(&api, "node-own").await;
    operator.abort();
}
