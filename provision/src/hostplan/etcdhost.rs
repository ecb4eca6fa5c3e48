//! A dedicated etcd host (`spec.etcd.external`): etcd and nothing else.
//! Its member runs exactly as a controller's would (same unit, same
//! certificates from the etcd CA); no kubelet, no Node, no container
//! runtime, and only the etcd binaries of the bundle.

use super::certs::{CertPlan, etcd_healthcheck_client, etcd_member_certs};
use super::layout::ETCD_PKI;
use super::{EtcdMember, HostFile, Unit, units};

/// The bundle files an etcd host gets.
pub const BINARIES: [&str; 2] = ["bin/etcd", "bin/etcdctl"];

/// The units an etcd host runs, in start order.
pub const UNITS: [Unit; 1] = [Unit::Etcd];

/// Its files: the etcd CA's certificate (never its key), the unit and its
/// first-start settings.
pub fn files(m: &EtcdMember, etcd_ca_pem: &[u8]) -> Vec<HostFile> {
    vec![
        HostFile::new(
            format!("{ETCD_PKI}/ca.crt"),
            etcd_ca_pem.to_vec(),
            0o644,
            &[Unit::Etcd],
        ),
        units::etcd(m),
        units::etcd_bootstrap_env(m),
    ]
}

/// Its certificates: the member's serving and peer ones, and etcdctl's
/// client one for `up` and `status`.
pub fn certs(m: &EtcdMember, days: u32) -> Vec<CertPlan> {
    let mut certs = etcd_member_certs(m, days);
    certs.push(etcd_healthcheck_client(days));
    certs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> EtcdMember {
        EtcdMember {
            name: "etcd-1".into(),
            address: "192.0.2.21".into(),
            kubernetes_version: "v1.34.10".into(),
            cluster_name: "demo".into(),
            members: vec![
                ("etcd-1".into(), "192.0.2.21".into()),
                ("etcd-2".into(), "192.0.2.22".into()),
                ("etcd-3".into(), "192.0.2.23".into()),
            ],
            joins_existing: false,
        }
    }

    #[test]
    fn an_etcd_host_gets_the_member_and_nothing_of_kubernetes() {
        let m = member();
        let files = files(&m, b"CA");
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/kubernetes/pki/etcd/ca.crt",
                "/etc/systemd/system/etcd.service",
                "/etc/kubernetes/etcd-bootstrap.env",
            ]
        );
        let unit = String::from_utf8_lossy(&files[1].content).into_owned();
        assert!(unit.contains("--name=etcd-1"), "{unit}");
        assert!(unit.contains("--listen-peer-urls=https://192.0.2.21:2380"));
        let env = String::from_utf8_lossy(&files[2].content).into_owned();
        assert!(env.contains(
            "ETCD_INITIAL_CLUSTER=etcd-1=https://192.0.2.21:2380,etcd-2=https://192.0.2.22:2380,etcd-3=https://192.0.2.23:2380"
        ));
        let names: Vec<&str> = certs(&m, 365).iter().map(|c| c.name).collect();
        assert_eq!(names, ["server", "peer", "healthcheck-client"]);
        let server = &certs(&m, 365)[0];
        assert!(server.spec.sans.contains(&"192.0.2.21".to_string()));
    }
}
