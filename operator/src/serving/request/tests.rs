//! Tests of the parent module.

use super::*;

fn joined1() -> Vec<Joined> {
    vec![
        Joined {
            owner: "default/w1".into(),
            node_name: "worker-1".into(),
            address: "198.18.0.11".into(),
        },
        Joined {
            owner: "default/w2".into(),
            node_name: "worker-2".into(),
            address: "198.18.0.12".into(),
        },
    ]
}

fn good() -> ServingRequest {
    ServingRequest {
        username: "system:node:worker-1".into(),
        signer: SERVING_SIGNER.into(),
        common_name: Some("system:node:worker-1".into()),
        organizations: vec!["system:nodes".into()],
        dns_names: vec!["worker-1".into()],
        ips: vec!["198.18.0.11".parse().unwrap()],
        other_sans: vec![],
        usages: vec![
            "digital signature".into(),
            "key encipherment".into(),
            "server auth".into(),
        ],
    }
}

fn reason(d: Decision) -> &'static str {
    match d {
        Decision::Leave { reason, .. } => reason,
        Decision::Approve { owner } => panic!("approved for {owner}"),
    }
}

#[test]
fn the_nodes_own_names_are_approved() {
    assert_eq!(
        decide(&good(), &joined1()),
        Decision::Approve {
            owner: "default/w1".into()
        }
    );
    let mut only_ip = good();
    only_ip.dns_names.clear();
    assert!(matches!(
        decide(&only_ip, &joined1()),
        Decision::Approve { .. }
    ));
}

#[test]
fn an_extra_ip_or_name_is_left_with_the_reason() {
    let mut r = good();
    r.ips.push("10.0.0.99".parse().unwrap());
    match decide(&r, &joined1()) {
        Decision::Leave {
            reason,
            message,
            owner,
        } => {
            assert_eq!(reason, "ForeignName");
            assert!(message.contains("10.0.0.99"), "{message}");
            assert_eq!(owner.as_deref(), Some("default/w1"));
        }
        d => panic!("{d:?}"),
    }
    let mut r = good();
    r.dns_names.push("kubernetes.default.svc".into());
    assert_eq!(reason(decide(&r, &joined1())), "ForeignName");
    // Another joined host's IP is foreign too.
    let mut r = good();
    r.ips = vec!["198.18.0.12".parse().unwrap()];
    assert_eq!(reason(decide(&r, &joined1())), "ForeignName");
    let mut r = good();
    r.other_sans.push("Rfc822Name(a@b)".into());
    assert_eq!(reason(decide(&r, &joined1())), "ForeignName");
    let mut r = good();
    r.dns_names.clear();
    r.ips.clear();
    assert_eq!(reason(decide(&r, &joined1())), "NoNames");
}

#[test]
fn only_nodes_kubeup_joined_and_only_as_themselves() {
    let mut r = good();
    r.username = "system:node:stranger".into();
    r.common_name = Some("system:node:stranger".into());
    r.dns_names = vec!["stranger".into()];
    assert_eq!(reason(decide(&r, &joined1())), "NodeNotJoinedByKubeup");
    let mut r = good();
    r.username = "system:serviceaccount:default:x".into();
    assert_eq!(reason(decide(&r, &joined1())), "NotANode");
    // worker-2 asking for worker-1's identity.
    let mut r = good();
    r.username = "system:node:worker-2".into();
    assert_eq!(reason(decide(&r, &joined1())), "WrongSubject");
    let mut r = good();
    r.organizations = vec!["system:masters".into()];
    assert_eq!(reason(decide(&r, &joined1())), "WrongSubject");
    let mut r = good();
    r.usages.push("client auth".into());
    assert_eq!(reason(decide(&r, &joined1())), "WrongUsages");
    let mut r = good();
    r.usages = vec!["digital signature".into()];
    assert_eq!(reason(decide(&r, &joined1())), "WrongUsages");
    let mut r = good();
    r.signer = "kubernetes.io/kube-apiserver-client".into();
    assert_eq!(reason(decide(&r, &joined1())), "NotKubeletServing");
}

#[test]
fn a_dns_address_is_the_hosts_name() {
    let j = vec![Joined {
        owner: "default/w1".into(),
        node_name: "worker-1".into(),
        address: "worker-1.example.org".into(),
    }];
    let mut r = good();
    r.ips.clear();
    r.dns_names = vec!["worker-1".into(), "Worker-1.example.org".into()];
    assert!(matches!(decide(&r, &j), Decision::Approve { .. }));
    r.ips = vec!["198.18.0.11".parse().unwrap()];
    assert_eq!(reason(decide(&r, &j)), "ForeignName");
}

#[test]
fn a_real_request_parses() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["worker-1".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("198.18.0.11".parse().unwrap()));
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, "system:node:worker-1");
    params.distinguished_name = dn;
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let csr = CertificateSigningRequest {
        spec: k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(pem.into_bytes()),
            signer_name: SERVING_SIGNER.into(),
            username: Some("system:node:worker-1".into()),
            usages: Some(good().usages),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(parse(&csr).unwrap(), good());
    let mut bad = csr.clone();
    bad.spec.request = k8s_openapi::ByteString(b"nonsense".to_vec());
    assert!(parse(&bad).is_err());
}

#[test]
fn joined_nodes_are_those_past_their_certificates() {
    use kubeup_crds::workerjoin::WorkerJoinStatus;
    let mk = |name: &str, phase: Phase, node: Option<&str>| {
        let mut w = WorkerJoin::new(name, Default::default());
        w.metadata.namespace = Some("default".into());
        w.spec.address = "198.18.0.11".into();
        w.status = Some(WorkerJoinStatus {
            phase,
            node_name: node.map(str::to_string),
            ..Default::default()
        });
        Arc::new(w)
    };
    let j = joined(&[
        mk("a", Phase::Ready, Some("n-a")),
        mk("b", Phase::Preflight, Some("n-b")),
        mk("c", Phase::WaitingForNode, None),
        mk("d", Phase::Starting, Some("n-d")),
    ]);
    let names: Vec<&str> = j.iter().map(|j| j.node_name.as_str()).collect();
    assert_eq!(names, ["n-a", "n-d"]);
    assert_eq!(j[0].owner, "default/a");
}

#[test]
fn apiserver_names_and_cluster_addresses_are_never_approved() {
    let facts = ClusterFacts {
        controllers: vec!["198.18.0.10".into()],
        service_cidr: "10.96.0.0/12".parse().ok(),
        pod_cidr: "10.244.0.0/16".parse().ok(),
        domain: "cluster.local".into(),
        allow_loopback: false,
    };
    assert_eq!(reserved_names(&good(), &facts), None);
    for ip in [
        "127.0.0.1",
        "10.96.0.1",
        "10.244.1.5",
        "198.18.0.10",
        "169.254.1.1",
        "0.0.0.0",
    ] {
        let mut r = good();
        r.ips.push(ip.parse().unwrap());
        assert!(reserved_names(&r, &facts).is_some(), "{ip}");
    }
    for name in [
        "kubernetes",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    ] {
        let mut r = good();
        r.dns_names.push(name.into());
        assert!(reserved_names(&r, &facts).is_some(), "{name}");
    }
}
