//! The controller's certificate expiry against a real kube-apiserver, with
//! the operator's own RBAC (the chart's, impersonated): certificates
//! published in ConfigMap kubeup-certificates turn into the
//! `CertificatesValid` condition on the Cluster and a metric per
//! certificate; one nearing expiry turns the condition False and names it.

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

mod common;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::reflector;
use kubeup_crds::Cluster;
use kubeup_crds::conditions::{ConditionStatus, find};
use kubeup_operator::bundle::Bundles;
use kubeup_operator::certexpiry::{self, CONDITION, CONFIGMAP};
use kubeup_operator::context::{Context, Settings};
use kubeup_provision::pki::{CaKind, CertificateAuthority, LeafSpec};
use kubeup_testsupport::apiserver::ApiServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_certificates_become_a_condition_and_a_metric() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    let clusters: Api<Cluster> = Api::all(api.client.clone());
    clusters
        .create(
            &PostParams::default(),
            &serde_yaml_ng::from_str(common::CLUSTER).unwrap(),
        )
        .await
        .unwrap();
    let sa = common::operator_client(&api).await;
    let (store, _writer) = reflector::store();
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new(
        sa,
        Bundles::new(dir.path()),
        Settings {
            namespace: common::NAMESPACE.into(),
            ..Settings::default()
        },
        store,
    );

    // Nothing published yet: Unknown, and it says how to fix it.
    let c = certexpiry::check(&ctx)
        .await
        .expect("check with the chart's RBAC");
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::Unknown, "NotPublished")
    );

    let (ca, _) = CertificateAuthority::generate(CaKind::Cluster, 3650).unwrap();
    let long = ca
        .issue(&LeafSpec::server("apiserver", vec!["a".into()], 365))
        .unwrap();
    let short = ca
        .issue(&LeafSpec::client("front-proxy-client", &[], 5))
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), common::NAMESPACE);
    let mut cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP.into()),
            ..Default::default()
        },
        data: Some(
            [
                ("ca.crt".to_string(), ca.cert_pem().to_string()),
                ("apiserver.crt".to_string(), long.cert_pem.clone()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    // The controller check read the Cluster before this one writes: its
    // later write (with only what it read) must not drop this condition.
    let stale = clusters.get("test").await.unwrap();
    let c = certexpiry::check(&ctx).await.unwrap();
    let ready = kubeup_crds::conditions::Condition::now(
        "ControllersReady",
        ConditionStatus::True,
        "AllReady",
        "1/1 apiservers ready",
    );
    certexpiry::set_cluster_condition(&clusters, &stale, ready)
        .await
        .unwrap();
    let status = clusters.get("test").await.unwrap().status.unwrap();
    assert!(find(&status.conditions, "ControllersReady").is_some());
    assert_eq!(c.status, ConditionStatus::True, "{}", c.message);
    let status = clusters.get("test").await.unwrap().status.unwrap();
    let on_cluster = find(&status.conditions, CONDITION).expect("the condition on the Cluster");
    assert_eq!(on_cluster.status, ConditionStatus::True);
    assert!(
        on_cluster.message.contains("apiserver in 36"),
        "{}",
        on_cluster.message
    );

    // One certificate with 5 days left: False, named, and in the metric.
    cm.data
        .as_mut()
        .unwrap()
        .insert("front-proxy-client.crt".into(), short.cert_pem.clone());
    cms.replace(CONFIGMAP, &PostParams::default(), &cm)
        .await
        .unwrap();
    certexpiry::check(&ctx).await.unwrap();
    let status = clusters.get("test").await.unwrap().status.unwrap();
    let cond = find(&status.conditions, CONDITION).unwrap();
    assert_eq!(
        (cond.status, cond.reason.as_str()),
        (ConditionStatus::False, "ExpiringSoon")
    );
    assert!(
        cond.message.contains("front-proxy-client ("),
        "{}",
        cond.message
    );
    assert!(
        cond.message.contains("kubeup up"),
        "says what to do: {}",
        cond.message
    );
    let metrics = ctx.metrics.render();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "kubeup_operator_certificate_expiry_seconds{certificate=\"front-proxy-client\"}",
            )
        })
        .unwrap_or_else(|| panic!("no metric line:\n{metrics}"));
    let secs: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((4 * 86_400..5 * 86_400 + 3600).contains(&secs), "{line}");
}
