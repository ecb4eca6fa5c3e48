//! Leader election against a real kube-apiserver, with the operator's own
//! RBAC (the chart's Role, impersonated): one replica leads, the other
//! waits; a released Lease is taken over at once; the holder and the
//! transition count are what `kubectl get lease` shows.

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

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
    let (mut oa, mut ob) = (lease::Observer::default(), lease::Observer::default());

    assert!(
        lease::try_acquire(&sa, &a, &mut oa).await.unwrap(),
        "the first replica leads"
    );
    assert!(
        !lease::try_acquire(&sa, &b, &mut ob).await.unwrap(),
        "the second waits"
    );
    assert!(
        lease::try_acquire(&sa, &a, &mut oa).await.unwrap(),
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
    let renewing = tokio::time::timeout(Duration::from_secs(5), standby)
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
        !lease::try_acquire(&sa, &a, &mut oa).await.unwrap(),
        "the old leader is now a standby"
    );

    // (b stops renewing: the Lease is rewritten below, which would make it exit.)
    renewing.abort();
    // A holder whose clock runs an hour behind wrote the Lease: by the
    // writer's timestamps it expired long ago, yet it was just renewed. A
    // standby judges on its own clock from when it saw the record change,
    // so it waits a whole lease duration before taking over.
    let mut lease = leases.get(LEASE_NAME).await.unwrap();
    let skewed = k8s_openapi::jiff::Timestamp::from_second(
        k8s_openapi::jiff::Timestamp::now().as_second() - 3600,
    )
    .unwrap();
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("skewed-clock".into());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            skewed,
        ));
    }
    leases
        .replace(LEASE_NAME, &Default::default(), &lease)
        .await
        .unwrap();
    let c = settings("replica-c");
    let mut oc = lease::Observer::default();
    let seen = Instant::now();
    assert!(
        !lease::try_acquire(&sa, &c, &mut oc).await.unwrap(),
        "a renewTime in the writer's past is no expiry"
    );
    while seen.elapsed() < Duration::from_secs(7) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let took = lease::try_acquire(&sa, &c, &mut oc).await.unwrap();
        assert_eq!(
            took,
            seen.elapsed() > Duration::from_secs(6),
            "after {:?}",
            seen.elapsed()
        );
    }
}

/// A leader whose renew requests hang (an apiserver that accepts the
/// connection and never answers) stops leading at the renew deadline,
/// before any standby could take over, instead of hanging with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_renew_ends_leadership_within_the_renew_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = vec![];
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let stalled = kube::Client::try_from(config).unwrap();
    let s = settings("hung");
    let started = Instant::now();
    let why = tokio::time::timeout(
        Duration::from_secs(10),
        lease::keep_leading(&stalled, &s, tokio::time::Instant::now()),
    )
    .await
    .expect("keep_leading gives up instead of hanging");
    let took = started.elapsed();
    assert!(why.contains("renew deadline"), "{why}");
    assert!(
        took >= s.renew_deadline() && took < s.duration,
        "gave up after {took:?}: at the renew deadline {:?}, before the lease {:?} ran out",
        s.renew_deadline(),
        s.duration
    );
    held.abort();
}
