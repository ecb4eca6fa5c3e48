//! kubelet-serving CSRs against a real kube-apiserver (and the real signer
//! in kube-controller-manager), the approver acting as the operator's
//! ServiceAccount and the CSRs created as the node itself: the node's own
//! names are approved and signed; a forged request with an extra IP, and one
//! from a node kubeup did not join, stay unapproved with an Event saying why.

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher};
use kube::{Api, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_operator::bundle::Bundles;
use kubeup_operator::context::{Context, Settings};
use kubeup_operator::serving::{self, Approver, SERVING_SIGNER};
use kubeup_testsupport::apiserver::ApiServer;
use rcgen::{DnType, SanType};

/// A client acting as the kubelet of `node` (system:node:<node>, system:nodes).
async fn node_client(api: &ApiServer, node: &str) -> kube::Client {
    let kc = Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(format!("system:node:{node}"));
    config.auth_info.impersonate_groups =
        Some(vec!["system:nodes".into(), "system:authenticated".into()]);
    kube::Client::try_from(config).unwrap()
}

/// What a kubelet with `serverTLSBootstrap` sends: P-256 key, CN
/// system:node:<node>, O system:nodes, the given DNS names and IPs.
fn serving_csr(name: &str, node: &str, dns: &[&str], ips: &[&str]) -> CertificateSigningRequest {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    for ip in ips {
        params
            .subject_alt_names
            .push(SanType::IpAddress(ip.parse().unwrap()));
    }
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: SERVING_SIGNER.into(),
            usages: Some(vec![
                "digital signature".into(),
                "key encipherment".into(),
                "server auth".into(),
            ]),
            ..Default::default()
        },
        status: None,
    }
}

fn condition_types(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().map(|c| c.type_.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_csrs_approved_only_for_the_joined_hosts_own_names() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    let kcm = common::ControllerManager::start(&api);
    // Nodes may create CSRs (what system:node grants in a real cluster).
    common::kubectl(
        &api,
        &[
            "create",
            "clusterrolebinding",
            "test-nodes-csr",
            "--clusterrole=system:node-bootstrapper",
            "--group=system:nodes",
        ],
        None,
    );

    // The Cluster (what serving names are checked against) and a WorkerJoin
    // past its certificates for worker-1 at 198.18.0.11.
    common::kubectl(&api, &["apply", "-f", "-"], Some(common::CLUSTER));
    let admin_wjs: Api<WorkerJoin> = Api::namespaced(api.client.clone(), "default");
    let wj: WorkerJoin = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubeup.dev/v1alpha1",
        "kind": "WorkerJoin",
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {
            "address": "198.18.0.11",
            "user": "root",
            "sshSecretRef": {"name": "worker-ssh"},
            "hostKey": {"policy": "AcceptNew"}
        }
    }))
    .unwrap();
    admin_wjs.create(&PostParams::default(), &wj).await.unwrap();
    let wj = admin_wjs
        .patch_status(
            "w1",
            &PatchParams::apply("test").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "kubeup.dev/v1alpha1",
                "kind": "WorkerJoin",
                "status": {"phase": "WaitingForNode", "nodeName": "worker-1", "observedGeneration": 1}
            })),
        )
        .await
        .unwrap();

    // The approver as the operator's ServiceAccount, with a store holding it.
    let sa = common::operator_client(&api).await;
    let (store, mut writer) = reflector::store::<WorkerJoin>();
    writer.apply_watcher_event(&watcher::Event::Apply(wj));
    let dir = tempfile::tempdir().unwrap();
    let ctx = Arc::new(Context::new(
        sa.clone(),
        Bundles::new(dir.path()),
        Settings::default(),
        store.clone(),
    ));
    let approver = Arc::new(Approver::new(ctx.clone(), store));

    let node_csrs: Api<CertificateSigningRequest> = Api::all(node_client(&api, "worker-1").await);
    let stranger_csrs: Api<CertificateSigningRequest> =
        Api::all(node_client(&api, "stranger").await);
    let good = node_csrs
        .create(
            &PostParams::default(),
            &serving_csr("good", "worker-1", &["worker-1"], &["198.18.0.11"]),
        )
        .await
        .unwrap();
    let forged = node_csrs
        .create(
            &PostParams::default(),
            &serving_csr(
                "forged",
                "worker-1",
                &["worker-1"],
                &["198.18.0.11", "10.0.0.99"],
            ),
        )
        .await
        .unwrap();
    let stranger = stranger_csrs
        .create(
            &PostParams::default(),
            &serving_csr("stranger", "stranger", &["stranger"], &["198.18.0.50"]),
        )
        .await
        .unwrap();
    assert_eq!(
        good.spec.username.as_deref(),
        Some("system:node:worker-1"),
        "the apiserver records the creator"
    );

    for csr in [good, forged, stranger] {
        serving::reconcile(Arc::new(csr), approver.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let admin_csrs: Api<CertificateSigningRequest> = Api::all(api.client.clone());
    // The good one: approved, then signed by the real signer.
    let signed = common::eventually("the good CSR signed", Duration::from_secs(60), || {
        let admin_csrs = admin_csrs.clone();
        async move {
            let c = admin_csrs.get("good").await.map_err(|e| e.to_string())?;
            match c.status.as_ref().and_then(|s| s.certificate.clone()) {
                Some(cert) if !cert.0.is_empty() => Ok(c),
                _ => Err(format!("{:?}", condition_types(&c))),
            }
        }
    })
    .await;
    assert!(
        condition_types(&signed).contains(&"Approved".to_string()),
        "kcm: {}",
        kcm.log()
    );
    // The forged and the stranger's: no condition at all.
    for name in ["forged", "stranger"] {
        let c = admin_csrs.get(name).await.unwrap();
        assert!(
            condition_types(&c).is_empty(),
            "{name}: {:?}",
            condition_types(&c)
        );
    }

    // Events saying why: on the WorkerJoin for the forged one (naming the
    // extra IP), on the CSR for the stranger's.
    let events: Api<Event> = Api::all(api.client.clone());
    let seen = common::eventually("the Events", Duration::from_secs(20), || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let notes: Vec<(String, String, String)> = list
                .items
                .iter()
                .map(|e| {
                    (
                        e.regarding
                            .as_ref()
                            .and_then(|r| r.kind.clone())
                            .unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        e.note.clone().unwrap_or_default(),
                    )
                })
                .collect();
            if notes.len() >= 2 {
                Ok(notes)
            } else {
                Err(format!("{notes:?}"))
            }
        }
    })
    .await;
    assert!(
        seen.iter().any(|(kind, reason, note)| kind == "WorkerJoin"
            && reason == "ForeignName"
            && note.contains("forged")
            && note.contains("10.0.0.99")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(kind, reason, note)| kind == "CertificateSigningRequest"
                && reason == "NodeNotJoinedByKubeup"
                && note.contains("stranger")),
        "{seen:?}"
    );

    // Reconciling again changes nothing and reports nothing new.
    let forged = admin_csrs.get("forged").await.unwrap();
    serving::reconcile(Arc::new(forged), approver.clone())
        .await
        .unwrap();
    assert!(
        condition_types(&admin_csrs.get("forged").await.unwrap()).is_empty(),
        "still unapproved"
    );
    let text = ctx.metrics.render();
    assert!(
        text.contains("kubeup_operator_serving_csrs_total{result=\"approved\"} 1"),
        "{text}"
    );
    let _ = admin_wjs.get("w1").await.unwrap().name_any();
    drop(kcm);
}
