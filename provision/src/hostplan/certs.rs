//! The certificates a controller needs: which CA signs each, its subject,
//! names and where it goes.

use std::net::Ipv4Addr;

use crate::pki::{CaKind, LeafSpec, Usage};

use super::layout::{ETCD_PKI, PKI};
use super::{ControllerInput, EtcdMember, Unit};

/// One certificate to have on the host.
#[derive(Clone, Debug)]
pub struct CertPlan {
    pub name: &'static str,
    pub ca: CaKind,
    pub spec: LeafSpec,
    pub cert_path: String,
    /// Same as `cert_path` for combined PEMs (the kubelet's).
    pub key_path: String,
    pub affects: Vec<Unit>,
}

/// Every leaf certificate of a controller. `first_service_ip` is the
/// `kubernetes` Service's address, which clients inside pods dial.
pub fn controller_certs(
    c: &ControllerInput,
    first_service_ip: Ipv4Addr,
    days: u32,
) -> Vec<CertPlan> {
    let n = &c.node;
    let domain = &n.cluster_domain;
    let mut apiserver_sans = vec![
        n.address.clone(),
        first_service_ip.to_string(),
        "127.0.0.1".into(),
        "localhost".into(),
        n.node_name.clone(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{domain}"),
    ];
    // Clients of the endpoint (a virtual IP or the user's load balancer)
    // reach any controller's apiserver under that name.
    apiserver_sans.extend(c.endpoint.iter().cloned());
    apiserver_sans.dedup();
    let mut certs = c
        .etcd
        .local()
        .map(|m| etcd_member_certs(m, days))
        .unwrap_or_default();
    certs.extend([
        etcd_healthcheck_client(days),
        pair(
            "apiserver-etcd-client",
            CaKind::Etcd,
            LeafSpec::client("kube-apiserver-etcd-client", &[], days),
            PKI,
            &[Unit::KubeApiserver],
        ),
        pair(
            "apiserver",
            CaKind::Cluster,
            LeafSpec::server("kube-apiserver", apiserver_sans, days),
            PKI,
            &[Unit::KubeApiserver],
        ),
        pair(
            "apiserver-kubelet-client",
            CaKind::Cluster,
            LeafSpec::client("kube-apiserver-kubelet-client", &[], days),
            PKI,
            &[Unit::KubeApiserver],
        ),
        pair(
            "front-proxy-client",
            CaKind::FrontProxy,
            LeafSpec::client("front-proxy-client", &[], days),
            PKI,
            &[Unit::KubeApiserver],
        ),
        pair(
            "controller-manager",
            CaKind::Cluster,
            LeafSpec::client("system:kube-controller-manager", &[], days),
            PKI,
            &[Unit::KubeControllerManager],
        ),
        pair(
            "scheduler",
            CaKind::Cluster,
            LeafSpec::client("system:kube-scheduler", &[], days),
            PKI,
            &[Unit::KubeScheduler],
        ),
        pair(
            "kube-proxy",
            CaKind::Cluster,
            LeafSpec::client("system:kube-proxy", &[], days),
            PKI,
            &[Unit::KubeProxy],
        ),
    ]);
    certs.push(kubelet_client(&n.node_name, days));
    // The kubelet's serving certificate, from the kubelet-serving CA like the
    // ones workers get through the CSR API (kube-controller-manager's
    // kubelet-serving signer): the apiserver verifies kubelets against that
    // CA (--kubelet-certificate-authority), so logs/exec/metrics use verified
    // TLS, and no kubelet certificate passes as the apiserver's.
    let mut kubelet_sans = vec![n.address.clone(), n.node_name.clone()];
    kubelet_sans.dedup();
    certs.push(pair(
        "kubelet-serving",
        CaKind::KubeletServing,
        LeafSpec {
            common_name: format!("system:node:{}", n.node_name),
            organizations: vec!["system:nodes".into()],
            sans: kubelet_sans,
            usage: Usage::Server,
            days,
        },
        PKI,
        &[Unit::Kubelet],
    ));
    certs
}

/// A certificate and its key, side by side in `dir`.
fn pair(name: &'static str, ca: CaKind, spec: LeafSpec, dir: &str, affects: &[Unit]) -> CertPlan {
    CertPlan {
        name,
        ca,
        spec,
        cert_path: format!("{dir}/{name}.crt"),
        key_path: format!("{dir}/{name}.key"),
        affects: affects.to_vec(),
    }
}

/// An etcd member's serving and peer certificates (both also clients:
/// etcd's peers authenticate each other with them).
pub fn etcd_member_certs(m: &EtcdMember, days: u32) -> Vec<CertPlan> {
    let sans = vec![
        m.address.clone(),
        "127.0.0.1".into(),
        "localhost".into(),
        m.name.clone(),
    ];
    ["server", "peer"]
        .into_iter()
        .map(|name| {
            pair(
                name,
                CaKind::Etcd,
                LeafSpec {
                    common_name: m.name.clone(),
                    organizations: vec![],
                    sans: sans.clone(),
                    usage: Usage::ServerAndClient,
                    days,
                },
                ETCD_PKI,
                &[Unit::Etcd],
            )
        })
        .collect()
}

/// etcdctl's client certificate (health checks, membership changes).
pub fn etcd_healthcheck_client(days: u32) -> CertPlan {
    pair(
        "healthcheck-client",
        CaKind::Etcd,
        LeafSpec::client("kube-etcd-healthcheck-client", &[], days),
        ETCD_PKI,
        &[],
    )
}

/// The kubelet's client certificate, one PEM with its key where the
/// kubelet's rotation expects it.
pub fn kubelet_client(node_name: &str, days: u32) -> CertPlan {
    CertPlan {
        name: "kubelet-client",
        ca: CaKind::Cluster,
        spec: LeafSpec::client(&format!("system:node:{node_name}"), &["system:nodes"], days),
        cert_path: super::layout::KUBELET_CLIENT_PEM.into(),
        key_path: super::layout::KUBELET_CLIENT_PEM.into(),
        affects: vec![Unit::Kubelet],
    }
}
