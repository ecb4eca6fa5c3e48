//! Who answers at the control-plane endpoint, found by TLS handshakes
//! against a real kube-apiserver: the certificate it presents, verified
//! against the cluster CA; a stranger's CA or a closed port is an error,
//! never a holder.

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use kubeup_crds::cluster::{ControlPlaneEndpoint, EndpointKind};
use kubeup_crds::conditions::ConditionStatus;
use kubeup_operator::endpoint;
use kubeup_testsupport::apiserver::ApiServer;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn the_apiserver_is_recognised_by_its_certificate_and_strangers_are_not() {
    let api = ApiServer::start().await.expect("apiserver harness");
    let port: u16 = api.url.rsplit(':').next().unwrap().parse().unwrap();
    let ca = std::fs::read_to_string(api.pki.join("ca.crt")).unwrap();
    let tls = endpoint::client_config(&ca).unwrap();

    let seen = endpoint::serving_cert("127.0.0.1", port, tls.clone()).await;
    let served = CertificateDer::from_pem_file(api.pki.join("apiserver.crt")).unwrap();
    assert_eq!(
        seen.as_deref(),
        Ok(served.as_ref()),
        "the apiserver's own certificate"
    );

    // The composition: the endpoint's certificate is the first
    // controller's; the second does not answer.
    let vip = ControlPlaneEndpoint {
        address: "127.0.0.1".into(),
        kind: EndpointKind::VirtualIP,
        port,
        virtual_router_id: 51,
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let nobody = endpoint::serving_cert("127.0.0.1", closed_port, tls.clone()).await;
    assert!(nobody.is_err());
    let c = endpoint::condition(
        &vip,
        &seen,
        &[
            ("127.0.0.2".into(), nobody.clone()),
            ("127.0.0.1".into(), seen.clone()),
        ],
    );
    assert_eq!(c.status, ConditionStatus::True);
    assert_eq!(c.message, format!("127.0.0.1:{port} held by 127.0.0.1"));
    let c = endpoint::condition(&vip, &nobody, &[("127.0.0.1".into(), seen.clone())]);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, "Unreachable")
    );

    // Another CA: the handshake fails; nothing is taken for a controller.
    let other = rcgen::generate_simple_self_signed(vec!["stranger".into()]).unwrap();
    let stranger = endpoint::client_config(&other.cert.pem()).unwrap();
    let refused = endpoint::serving_cert("127.0.0.1", port, stranger).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("UnknownIssuer") || e.contains("invalid peer certificate")),
        "{refused:?}"
    );
    assert!(endpoint::client_config("not a certificate").is_err());
}
