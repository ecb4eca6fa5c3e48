//! The controller against a real kube-apiserver, acting as its own
//! ServiceAccount, joining (dry run) a real OpenSSH sshd on loopback:
//! finalizer and status transitions, recovery once a missing Secret
//! appears, a duplicate address refused, a changed host key stopping the
//! join with both fingerprints, and delete releasing the finalizer without
//! touching a host the join never changed.

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

use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubeup_crds::workerjoin::WorkerJoinPhase as Phase;
use kubeup_crds::{WorkerJoin, conditions};
use kubeup_operator::context::Settings;
use kubeup_operator::controller;
use kubeup_testsupport::apiserver::ApiServer;
use kubeup_testsupport::sshd::{Sshd, keygen};

fn workerjoin(name: &str, port: u16) -> WorkerJoin {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeup.dev/v1alpha1",
        "kind": "WorkerJoin",
        "metadata": {"name": name, "namespace": common::NAMESPACE},
        "spec": {
            "address": "127.0.0.1",
            "port": port,
            "user": "root",
            "sshSecretRef": {"name": "worker-ssh"},
            "hostKey": {"policy": "AcceptNew"},
            "dryRun": true
        }
    }))
    .unwrap()
}

use common::{condition, wait_for};

/// The sshd's host public keys (OpenSSH lines), ed25519 first.
fn host_public_keys(sshd: &Sshd) -> Vec<String> {
    ["ed25519", "ecdsa", "rsa"]
        .iter()
        .filter_map(|k| {
            std::fs::read_to_string(sshd.dir().join(format!("ssh_host_{k}_key.pub"))).ok()
        })
        .collect()
}

/// A spec change (a label), so the next pass is a new generation.
async fn next_generation(wjs: &Api<WorkerJoin>, name: &str, tier: &str) {
    wjs.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"labels": {"tier": tier}}})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_status_finalizer_secret_recovery_duplicates_and_host_key_change() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    common::kubectl(&api, &["apply", "-f", "-"], Some(common::CLUSTER));
    let kcm = common::ControllerManager::start(&api);
    let mut sshd = Sshd::start().expect("sshd harness (needs root and openssh-server)");
    let keys = tempfile::tempdir().unwrap();
    let user_key = keygen(keys.path(), "id_worker", "ed25519", "").unwrap();
    sshd.authorize("root", &user_key.public).unwrap();

    // The operator, as its ServiceAccount.
    let sa = common::operator_client(&api).await;
    controller::check_crds(&sa).await.expect("CRDs served");
    let settings = Settings {
        namespace: common::NAMESPACE.into(),
        // The test sshd listens on loopback.
        allow_loopback: true,
        ..Settings::default()
    };
    let operator = common::spawn_operator(sa, settings);

    let wjs: Api<WorkerJoin> = Api::namespaced(api.client.clone(), common::NAMESPACE);
    // 1. No Secret yet: a condition, not a crash loop; the finalizer is on.
    wjs.create(&PostParams::default(), &workerjoin("a-first", sshd.port()))
        .await
        .unwrap();
    let wj = wait_for(&wjs, "a-first", "SecretNotFound", |w| {
        condition(w, "Ready").is_some_and(|c| c.reason == "SecretNotFound")
    })
    .await;
    assert_eq!(wj.status.as_ref().unwrap().phase, Phase::Connecting);
    assert!(wj.finalizers().iter().any(|f| f == "kubeup.dev/cleanup"));
    assert_eq!(
        condition(&wj, "Ready").unwrap().observed_generation,
        Some(1)
    );

    // 2. A second WorkerJoin for the same machine is refused.
    wjs.create(&PostParams::default(), &workerjoin("b-second", sshd.port()))
        .await
        .unwrap();
    let dup = wait_for(&wjs, "b-second", "DuplicateAddress", |w| {
        condition(w, "Ready").is_some_and(|c| c.reason == "DuplicateAddress")
    })
    .await;
    assert_eq!(dup.status.as_ref().unwrap().phase, Phase::Failed);
    assert!(
        condition(&dup, "Ready")
            .unwrap()
            .message
            .contains("kubeup-system/a-first")
    );

    // 3. The Secret appears: the join recovers by itself (the Secret watch),
    // verifies and records the host key, runs preflight, plans.
    common::create_ssh_secret(&api, &user_key.private_pem()).await;
    let wj = wait_for(
        &wjs,
        "a-first",
        "host key verified and preflight run",
        |w| {
            condition(w, "HostKeyVerified")
                .is_some_and(|c| c.status == conditions::ConditionStatus::True)
                && condition(w, "PreflightPassed")
                    .is_some_and(|c| c.status != conditions::ConditionStatus::Unknown)
        },
    )
    .await;
    let st = wj.status.clone().unwrap();
    let fp = st.host_key_fingerprint.clone().unwrap();
    let known: Vec<String> = ["ed25519", "ecdsa", "rsa"]
        .iter()
        .filter(|k| sshd.dir().join(format!("ssh_host_{k}_key.pub")).exists())
        .map(|k| sshd.host_key_fingerprint(k))
        .collect();
    assert!(
        known.contains(&fp),
        "{fp} is one of the sshd's host keys {known:?}"
    );
    assert!(
        st.host_key.as_deref().unwrap_or("").starts_with("ssh-"),
        "AcceptNew records the key"
    );
    eprintln!(
        "dry run status: {}",
        serde_json::to_string_pretty(&st).unwrap()
    );
    if st.phase == Phase::DryRunComplete {
        assert!(!st.planned_actions.is_empty());
    }
    // The first key is recorded where only the operator writes: its
    // known_hosts ConfigMap, under the WorkerJoin's uid.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(api.client.clone(), common::NAMESPACE);
    let known = cms
        .get("kubeup-known-hosts")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    let entry = known.get(&wj.uid().unwrap()).cloned().unwrap_or_default();
    assert!(
        entry.contains(st.host_key.as_deref().unwrap().split(' ').nth(1).unwrap()),
        "the recorded key is in kubeup-known-hosts: {entry}"
    );

    // 3b. A Cluster edit that lists this machine as a controller refuses
    // it (decided again on the Cluster's change, no SSH); fixing the
    // Cluster lifts the refusal by itself: it was never remembered as a
    // failure that waits for the WorkerJoin to change.
    common::set_cluster_controller(&api, "127.0.0.1").await;
    let wj = wait_for(&wjs, "a-first", "refused as a controller's address", |w| {
        condition(w, "Ready").is_some_and(|c| {
            c.reason == "InvalidSpec" && c.message.contains("controller's address")
        })
    })
    .await;
    assert_eq!(wj.status.unwrap().phase, Phase::Failed);
    common::set_cluster_controller(&api, "127.0.0.2").await;
    wait_for(&wjs, "a-first", "the dry run again", |w| {
        condition(w, "Ready").is_some_and(|c| c.reason != "InvalidSpec")
    })
    .await;

    // 4. The host key changes: the next pass (a spec change) stops with both
    // fingerprints named, and waits.
    sshd.restart_with_new_host_keys().unwrap();
    next_generation(&wjs, "a-first", "test").await;
    let wj = wait_for(&wjs, "a-first", "host key mismatch", |w| {
        condition(w, "HostKeyVerified").is_some_and(|c| c.reason == "HostKeyMismatch")
    })
    .await;
    let st = wj.status.clone().unwrap();
    assert_eq!(st.phase, Phase::Failed);
    let msg = &condition(&wj, "HostKeyVerified").unwrap().message;
    assert!(msg.contains(&fp), "names the recorded fingerprint: {msg}");
    assert!(
        msg.matches("SHA256:").count() >= 2,
        "names both fingerprints: {msg}"
    );
    assert_eq!(st.observed_generation, Some(2));

    // Whoever may patch a WorkerJoin's status cannot make the new key
    // trusted by writing it there: the record that counts is the operator's.
    let new_key = host_public_keys(&sshd).remove(0);
    wjs.patch_status(
        "a-first",
        &PatchParams::apply("someone-with-status-access").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "kubeup.dev/v1alpha1", "kind": "WorkerJoin",
            "status": {"hostKey": new_key.trim()}
        })),
    )
    .await
    .unwrap();
    next_generation(&wjs, "a-first", "again").await;
    let wj = wait_for(&wjs, "a-first", "still a mismatch", |w| {
        condition(w, "HostKeyVerified")
            .is_some_and(|c| c.reason == "HostKeyMismatch" && c.observed_generation == Some(3))
    })
    .await;
    assert_eq!(wj.status.unwrap().phase, Phase::Failed);

    // Events were published, and no key material anywhere.
    let events: Api<Event> = Api::namespaced(api.client.clone(), common::NAMESPACE);
    let evs = events.list(&ListParams::default()).await.unwrap();
    let reasons: Vec<String> = evs.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(reasons.iter().any(|r| r == "SecretNotFound"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r == "HostKeyMismatch"),
        "{reasons:?}"
    );
    let all = format!(
        "{}{}",
        serde_json::to_string(&evs.items).unwrap(),
        serde_json::to_string(&wjs.list(&ListParams::default()).await.unwrap().items).unwrap()
    );
    assert!(!all.contains("PRIVATE KEY"));
    let key_body = user_key.private_pem();
    let key_line = key_body.lines().nth(1).unwrap();
    assert!(
        !all.contains(key_line),
        "no private key text in status or Events"
    );

    // 5. Delete: the machine was never changed (dry run), so the finalizer
    // is released without SSH; the refused duplicate too.
    for name in ["a-first", "b-second"] {
        wjs.delete(name, &Default::default()).await.unwrap();
    }
    common::eventually("both WorkerJoins gone", Duration::from_secs(60), || {
        let wjs = wjs.clone();
        async move {
            let left = wjs
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            if left.items.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    left.items.iter().map(|w| w.name_any()).collect::<Vec<_>>()
                ))
            }
        }
    })
    .await;

    // 6. A deletion seen from a cache that lags: the old object is gone and
    // one of the same name was made again. Only the object in the API counts
    // (cleaning up for the old one would reset the new one's host).
    let first = wjs
        .create(&PostParams::default(), &workerjoin("c-again", sshd.port()))
        .await
        .unwrap();
    assert!(controller::still_there(&wjs, &first).await.unwrap());
    wjs.delete("c-again", &Default::default()).await.unwrap();
    common::eventually("c-again gone", Duration::from_secs(60), || {
        let wjs = wjs.clone();
        async move {
            match wjs.get_opt("c-again").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        }
    })
    .await;
    assert!(!controller::still_there(&wjs, &first).await.unwrap());
    let second = wjs
        .create(&PostParams::default(), &workerjoin("c-again", sshd.port()))
        .await
        .unwrap();
    assert!(!controller::still_there(&wjs, &first).await.unwrap());
    assert!(controller::still_there(&wjs, &second).await.unwrap());

    // 7. Through a bastion: its key is recorded beside the machine's in the
    // operator's known_hosts, and a changed bastion key is refused too.
    let target = Sshd::builder().listen("127.0.0.3").start().unwrap();
    target.authorize("root", &user_key.public).unwrap();
    let mut bastion = Sshd::start().unwrap();
    bastion.authorize("root", &user_key.public).unwrap();
    let mut via: WorkerJoin = workerjoin("d-via-bastion", target.port());
    via.spec.address = "127.0.0.3".into();
    via.spec.bastion = Some(kubeup_crds::Bastion {
        address: "127.0.0.1".into(),
        port: bastion.port(),
        user: "root".into(),
        secret_ref: None,
        host_key: Default::default(),
    });
    let via = wjs.create(&PostParams::default(), &via).await.unwrap();
    wait_for(
        &wjs,
        "d-via-bastion",
        "connected through the bastion",
        |w| {
            condition(w, "HostKeyVerified")
                .is_some_and(|c| c.status == conditions::ConditionStatus::True)
        },
    )
    .await;
    let known = cms
        .get("kubeup-known-hosts")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    let entry = known.get(&via.uid().unwrap()).cloned().unwrap_or_default();
    let record: serde_json::Value = serde_json::from_str(&entry).unwrap();
    for (side, sshd) in [("target", &target), ("bastion", &bastion)] {
        let line = record[side].as_str().unwrap_or_default();
        let pubs = host_public_keys(sshd);
        let body = line.split(' ').nth(1).unwrap_or("missing");
        assert!(
            pubs.iter().any(|p| p.contains(body)),
            "{side}'s key recorded: {entry}"
        );
    }
    bastion.restart_with_new_host_keys().unwrap();
    next_generation(&wjs, "d-via-bastion", "bastion").await;
    let wj = wait_for(&wjs, "d-via-bastion", "bastion host key mismatch", |w| {
        condition(w, "HostKeyVerified").is_some_and(|c| c.reason == "HostKeyMismatch")
    })
    .await;
    let msg = &condition(&wj, "HostKeyVerified").unwrap().message;
    assert!(
        msg.contains(&bastion.port().to_string()),
        "names the bastion: {msg}"
    );

    operator.abort();
    drop(kcm);
}
