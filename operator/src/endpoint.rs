//! Who answers at the control-plane endpoint, as the `Cluster`'s
//! `EndpointReady` condition: the serving certificate presented at the
//! endpoint is compared with the one each controller presents at its own
//! address (each controller's apiserver has its own certificate), so the
//! holder of a virtual IP is found with nothing but TLS handshakes: no SSH,
//! no etcd credentials, no privilege on the hosts. Every handshake is
//! verified against the cluster CA, so a stranger answering at the address
//! is reported, never taken for a controller.

use std::sync::Arc;
use std::time::Duration;

use kubeup_crds::cluster::{API_PORT, ControlPlaneEndpoint, EndpointKind};
use kubeup_crds::conditions::{Condition, ConditionStatus};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub const CONDITION: &str = "EndpointReady";

/// How long one handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// A TLS client that trusts only the cluster CA (PEM, as
/// `kube-root-ca.crt` holds it).
pub fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let der = der.map_err(|e| format!("the cluster CA: {e}"))?;
        roots.add(der).map_err(|e| format!("the cluster CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the cluster CA holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate (DER) the apiserver at `address:port` presents, once
/// verified for that address against the cluster CA.
pub async fn serving_cert(
    address: &str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let name = ServerName::try_from(address.to_string()).map_err(|e| e.to_string())?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((address, port))
            .await
            .map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = stream.get_ref();
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| "no certificate presented".to_string())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("no TLS answer within {}s", HANDSHAKE_TIMEOUT.as_secs()))?
}

/// What the endpoint and each controller (address, certificate) presented.
pub type Seen = Result<Vec<u8>, String>;

/// The condition for one look at the endpoint and the controllers.
pub fn condition(
    endpoint: &ControlPlaneEndpoint,
    at_endpoint: &Seen,
    controllers: &[(String, Seen)],
) -> Condition {
    let shown = format!("{}:{}", endpoint.address, endpoint.port);
    let (status, reason, message) = match at_endpoint {
        Err(e) => (
            ConditionStatus::False,
            "Unreachable",
            format!("{shown}: {e}"),
        ),
        Ok(cert) => {
            let answering = controllers
                .iter()
                .find(|(_, seen)| seen.as_ref().is_ok_and(|c| c == cert))
                .map(|(address, _)| address.as_str());
            match (answering, endpoint.kind) {
                (Some(a), EndpointKind::VirtualIP) => (
                    ConditionStatus::True,
                    "Held",
                    format!("{shown} held by {a}"),
                ),
                (Some(a), EndpointKind::LoadBalancer) => (
                    ConditionStatus::True,
                    "Answering",
                    format!("{shown} answers (last through {a})"),
                ),
                // Signed by the cluster CA yet no listed controller's: a
                // removed controller still running, or one that did not
                // answer at its own address just now.
                (None, _) => (
                    ConditionStatus::False,
                    "UnknownHolder",
                    format!(
                        "{shown} answers with a certificate no listed controller presents at its own address (a removed controller still running, or one not answering directly)"
                    ),
                ),
            }
        }
    };
    Condition::now(CONDITION, status, reason, message)
}

/// Look at the endpoint and every controller once, all at the same time.
pub async fn look(
    endpoint: &ControlPlaneEndpoint,
    controllers: &[String],
    tls: Arc<rustls::ClientConfig>,
) -> Condition {
    let at_endpoint = serving_cert(&endpoint.address, endpoint.port, tls.clone());
    let each = futures::future::join_all(controllers.iter().map(|a| {
        let tls = tls.clone();
        async move { (a.clone(), serving_cert(a, API_PORT, tls).await) }
    }));
    let (at_endpoint, each) = futures::join!(at_endpoint, each);
    condition(endpoint, &at_endpoint, &each)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip() -> ControlPlaneEndpoint {
        ControlPlaneEndpoint {
            address: "198.18.0.250".into(),
            kind: EndpointKind::VirtualIP,
            port: 6443,
            virtual_router_id: 51,
        }
    }

    fn seen(certs: &[(&str, Option<u8>)]) -> Vec<(String, Seen)> {
        certs
            .iter()
            .map(|(a, c)| {
                (
                    a.to_string(),
                    c.map(|b| vec![b]).ok_or_else(|| "refused".to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn the_holder_is_the_controller_with_the_same_certificate() {
        let each = seen(&[("a", Some(1)), ("b", Some(2)), ("c", None)]);
        let c = condition(&vip(), &Ok(vec![2]), &each);
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::True, "Held")
        );
        assert_eq!(c.message, "198.18.0.250:6443 held by b");
        let mut lb = vip();
        lb.kind = EndpointKind::LoadBalancer;
        let c = condition(&lb, &Ok(vec![1]), &each);
        assert_eq!(c.reason, "Answering");
        assert!(c.message.contains("through a"), "{}", c.message);
    }

    #[test]
    fn silence_and_strangers_are_not_ready() {
        let each = seen(&[("a", Some(1))]);
        let c = condition(&vip(), &Err("connection refused".into()), &each);
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "Unreachable")
        );
        assert_eq!(c.message, "198.18.0.250:6443: connection refused");
        let c = condition(&vip(), &Ok(vec![9]), &each);
        assert_eq!(c.reason, "UnknownHolder");
    }
}
