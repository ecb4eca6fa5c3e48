//! The CSR flow with the operator's own permissions (the chart's RBAC,
//! impersonated), against a real kube-apiserver and the real CSR signers of
//! kube-controller-manager; and requests outside that RBAC are refused.

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

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};
use kubeup_operator::csr::{self, ClientCert};
use kubeup_operator::proxytoken;
use kubeup_provision::pki;
use kubeup_testsupport::apiserver::ApiServer;
use secrecy::ExposeSecret;

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(ref e)) if e.code == 403)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_issue_with_the_operators_rbac_and_nothing_more() {
    let api = ApiServer::start().await.expect("apiserver harness");
    common::install(&api);
    let kcm = common::ControllerManager::start(&api);
    let sa = common::operator_client(&api).await;
    let ca = std::fs::read_to_string(api.pki.join("ca.crt")).unwrap();

    // kubelet: signer kube-apiserver-client-kubelet, system:node:<name>.
    let kubelet = ClientCert::kubelet("worker-1");
    let (cert, key) = csr::issue(
        &sa,
        &kubelet,
        "worker-1",
        "default.w1",
        "uid-1",
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("kubelet CSR: {e}\nkube-controller-manager:\n{}", kcm.log()));
    pki::is_current(&cert, &ca, &kubelet.leaf_spec(), 300)
        .expect("signed by the cluster CA with CN system:node:worker-1, O system:nodes");
    assert!(key.expose_secret().contains("PRIVATE KEY"));

    // kube-proxy: a token of kube-system/kube-proxy (TokenRequest), which
    // authenticates as that ServiceAccount with the node-proxier role.
    let token = proxytoken::request(&sa)
        .await
        .expect("the operator may request kube-proxy's token");
    let as_proxy = common::client_with_token(&api, token.expose_secret()).await;
    let nodes: Api<Node> = Api::all(as_proxy.clone());
    nodes
        .list(&ListParams::default())
        .await
        .expect("kube-proxy's token lists Nodes (system:node-proxier)");
    let payload = token.expose_secret().split('.').nth(1).unwrap().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    proxytoken::is_current(&payload, now, 300).expect("kube-proxy's, with about a year to live");
    assert!(
        forbidden(
            Api::<Secret>::namespaced(as_proxy, "kube-system")
                .list(&ListParams::default())
                .await
        ),
        "kube-proxy's token is no more than kube-proxy"
    );
    // …and only for that ServiceAccount.
    let other: Api<ServiceAccount> = Api::namespaced(sa.clone(), "kube-system");
    let req = k8s_openapi::api::authentication::v1::TokenRequest::default();
    assert!(
        forbidden(
            other
                .create_token_request("default", &PostParams::default(), &req)
                .await
        ),
        "tokens for any other ServiceAccount are refused"
    );

    // No private key in the API: the CSRs carry only requests and certs.
    let admin_csrs: Api<CertificateSigningRequest> = Api::all(api.client.clone());
    let all = admin_csrs.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
    let text = serde_json::to_string(&all.items).unwrap();
    assert!(!text.contains("PRIVATE KEY"));
    for c in &all.items {
        assert!(
            csr::is_ours(c, "uid-1"),
            "labelled and annotated with the WorkerJoin"
        );
    }

    // Outside the RBAC: approving for a signer it does not approve for…
    let sa_csrs: Api<CertificateSigningRequest> = Api::all(sa.clone());
    let g = csr::generate(&kubelet).unwrap();
    let mut serving = csr::csr_object("serving-1", &kubelet, &g.csr_pem, "default.w1", "uid-1");
    // The plain client signer above all: approving for it would mint any
    // identity, system:masters included.
    serving.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
    serving.spec.usages = Some(vec!["digital signature".into(), "client auth".into()]);
    let mut created = sa_csrs
        .create(&PostParams::default(), &serving)
        .await
        .unwrap();
    created.status = Some(Default::default());
    created.status.as_mut().unwrap().conditions = Some(vec![
        k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("Test".into()),
            ..Default::default()
        },
    ]);
    assert!(
        forbidden(
            sa_csrs
                .replace_subresource("approval", "serving-1", &PostParams::default(), &created)
                .await
        ),
        "approving a CSR for the plain client signer must be refused"
    );
    // …reading ConfigMaps other than kube-root-ca.crt, deleting CSRs,
    // deleting Secrets.
    let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), "default");
    assert!(forbidden(cms.list(&ListParams::default()).await));
    assert!(forbidden(
        sa_csrs.delete("serving-1", &Default::default()).await
    ));
    // Listing CSRs is allowed: the kubelet-serving ones are watched.
    assert!(sa_csrs.list(&ListParams::default()).await.is_ok());
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), "default");
    assert!(forbidden(secrets.delete("x", &Default::default()).await));
    // What it needs is allowed: the cluster CA in its own namespace.
    let own: Api<ConfigMap> = Api::namespaced(sa.clone(), common::NAMESPACE);
    let ca_cm = common::eventually("kube-root-ca.crt", Duration::from_secs(30), || {
        let own = own.clone();
        async move {
            own.get_opt("kube-root-ca.crt")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet published".to_string())
        }
    })
    .await;
    assert_eq!(ca_cm.data.unwrap()["ca.crt"].trim(), ca.trim());
    drop(kcm);
}
