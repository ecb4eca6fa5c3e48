//! A host that stops answering fails the phase it stalled after the
//! operator's phase timeout, as a transient error naming the phase, and
//! the join is tried again: against a real kube-apiserver, with a loopback
//! listener that accepts SSH connections and never says a word (what a
//! hung host or a silent connection looks like from the operator).

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

use kube::Api;
use kube::api::PostParams;
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::WorkerJoinPhase as Phase;
use kubeup_operator::context::Settings;
use kubeup_testsupport::apiserver::ApiServer;
use kubeup_testsupport::sshd::keygen;

use common::{condition, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_host_times_the_phase_out_and_the_join_is_retried() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    common::kubectl(&api, &["apply", "-f", "-"], Some(common::CLUSTER));

    // Accepts, then never sends the SSH banner.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });

    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "id_worker", "ed25519", "").unwrap();
    common::create_ssh_secret(&api, &key.private_pem()).await;

    let sa = common::operator_client(&api).await;
    let settings = Settings {
        namespace: common::NAMESPACE.into(),
        allow_loopback: true,
        // Well under the SSH connect timeout (15 s): the phase deadline is
        // what ends the wait.
        phase_timeout: Duration::from_secs(2),
        ..Settings::default()
    };
    let operator = common::spawn_operator(sa, settings);

    let wjs: Api<WorkerJoin> = Api::namespaced(api.client.clone(), common::NAMESPACE);
    let wj: WorkerJoin = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeup.dev/v1alpha1",
        "kind": "WorkerJoin",
        "metadata": {"name": "silent", "namespace": common::NAMESPACE},
        "spec": {
            "address": "127.0.0.1",
            "port": port,
            "user": "root",
            "sshSecretRef": {"name": "worker-ssh"},
            "hostKey": {"policy": "AcceptNew"}
        }
    }))
    .unwrap();
    wjs.create(&PostParams::default(), &wj).await.unwrap();

    // Timed out, transient (not Failed), and tried again: the second
    // attempt times out the same way.
    let wj = eventually("two timed-out attempts", Duration::from_secs(60), || {
        let wjs = wjs.clone();
        async move {
            let wj = wjs.get("silent").await.map_err(|e| e.to_string())?;
            let st = wj.status.clone().unwrap_or_default();
            let timed_out = condition(&wj, "Ready").is_some_and(|c| c.reason == "PhaseTimedOut");
            if timed_out && st.attempts >= 2 {
                Ok(wj)
            } else {
                Err(serde_json::to_string_pretty(&wj.status).unwrap_or_default())
            }
        }
    })
    .await;
    let st = wj.status.as_ref().unwrap();
    assert_ne!(
        st.phase,
        Phase::Failed,
        "a stall is not a permanent failure"
    );
    assert_eq!(st.phase, Phase::Connecting);
    let msg = &condition(&wj, "Ready").unwrap().message;
    assert!(msg.contains("Connecting did not finish within 2s"), "{msg}");
    operator.abort();
}
