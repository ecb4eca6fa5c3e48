//! Leader election against a real kube-apiserver, with the operator's own
//! RBAC (the chart's Role, impersonated): one replica leads, the other
//! waits; a released Lease is taken over at once; the holder and the
//! transition count are what `kubectl get lease` shows.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kubeup_operator::lease::{self, LEASE_NAME, LeaseSettings};
use kubeup_testsupport::apiserver::ApiServer;

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: common::NAMESPACE.into(),
        identity: identity.into(),
        duration: Duration::from_secs(6),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_released_lease_changes_hands_at_once() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    let sa = common::operator_client(&api).await;
    let (a, b) = (settings("replica-a"), settings("replica-b"));

    assert!(
        lease::try_acquire(&sa, &a).await.unwrap(),
        "the first replica leads"
    );
    assert!(
        !lease::try_acquire(&sa, &b).await.unwrap(),
        "the second waits"
    );
    assert!(
        lease::try_acquire(&sa, &a).await.unwrap(),
        "the leader renews"
    );

    // The standby blocks in `lead` while the leader holds the Lease…
    let standby = tokio::spawn(lease::lead(sa.clone(), b.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !standby.is_finished(),
        "no second leader while the Lease is held"
    );

    // …and takes over within its retry period once the leader releases it
    // (well inside the 6 s lease duration it would otherwise wait out).
    let released = Instant::now();
    lease::release(&sa, &a).await;
    tokio::time::timeout(Duration::from_secs(5), standby)
        .await
        .expect("the standby leads soon after the release")
        .unwrap();
    let took = released.elapsed();
    assert!(took < Duration::from_secs(6), "took {took:?}");

    let leases: Api<Lease> = Api::namespaced(api.client.clone(), common::NAMESPACE);
    let spec = leases.get(LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(
        !lease::try_acquire(&sa, &a).await.unwrap(),
        "the old leader is now a standby"
    );
}
