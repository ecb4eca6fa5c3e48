//! `cluster.yaml` validation: every bad input names its field.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::Path;

use kubeup_provision::config::parse;

const GOOD: &str = r#"
apiVersion: kubeup.dev/v1alpha1
kind: Cluster
metadata:
  name: demo
spec:
  kubernetesVersion: v1.34.10
  controllers:
    - address: 198.18.0.11
      user: root
      hostKey:
        policy: AcceptNew
"#;

fn problems_for(yaml: &str) -> Vec<String> {
    match parse(yaml, Path::new("/nonexistent-dir")) {
        Ok(_) => vec![],
        Err(ps) => ps.iter().map(|p| p.to_string()).collect(),
    }
}

/// Replace `from` in the good document by `to`, then expect a problem whose
/// text starts with `field`.
fn assert_rejected(from: &str, to: &str, field: &str) {
    assert!(
        GOOD.contains(from),
        "test setup: {from:?} not in the good document"
    );
    let yaml = GOOD.replacen(from, to, 1);
    let problems = problems_for(&yaml);
    assert!(
        problems.iter().any(|p| p.starts_with(field)),
        "expected a problem at {field}, got {problems:#?} for:\n{yaml}"
    );
}

#[test]
fn the_good_document_is_accepted_with_defaults() {
    let cluster = parse(GOOD, Path::new("/")).expect("valid");
    assert_eq!(cluster.spec.networking.pod_cidr, "10.244.0.0/16");
    assert_eq!(cluster.spec.networking.cluster_dns, "10.96.0.10");
    assert_eq!(cluster.spec.controllers[0].port, 22);
}

#[test]
fn not_yaml() {
    let problems = problems_for("spec: [unclosed");
    assert!(problems[0].contains("not valid YAML"), "{problems:?}");
}

#[test]
fn wrong_api_version() {
    assert_rejected("kubeup.dev/v1alpha1", "kubeup.dev/v9", "apiVersion");
}

#[test]
fn wrong_kind() {
    assert_rejected("kind: Cluster", "kind: WorkerJoin", "kind");
}

#[test]
fn unknown_top_level_field() {
    assert_rejected("kind: Cluster", "kind: Cluster\nspecs: {}", "specs");
}

#[test]
fn unknown_spec_field() {
    assert_rejected(
        "  kubernetesVersion: v1.34.10",
        "  kubernetesVersion: v1.34.10\n  colour: blue",
        "spec",
    );
    let problems = problems_for(&GOOD.replacen(
        "  kubernetesVersion: v1.34.10",
        "  kubernetesVersion: v1.34.10\n  colour: blue",
        1,
    ));
    assert!(problems[0].contains("colour"), "{problems:?}");
}

#[test]
fn unknown_nested_field_has_its_path() {
    assert_rejected(
        "      user: root",
        "      user: root\n      pasword: x",
        "spec.controllers[0]",
    );
}

#[test]
fn bad_address() {
    assert_rejected("198.18.0.11", "300.1.2.3", "spec.controllers[0].address");
    assert_rejected("198.18.0.11", "not a host!", "spec.controllers[0].address");
}

#[test]
fn unsupported_version() {
    assert_rejected("v1.34.10", "v1.35.0", "spec.kubernetesVersion");
}

#[test]
fn missing_name() {
    assert_rejected("  name: demo", "  labels: {}", "metadata.name");
}

#[test]
fn bad_name() {
    assert_rejected("name: demo", "name: Demo_Cluster", "metadata.name");
}

#[test]
fn pod_cidr_overlapping_service_cidr() {
    assert_rejected(
        "  controllers:",
        "  networking:\n    podCidr: 10.96.0.0/16\n    serviceCidr: 10.96.0.0/12\n  controllers:",
        "spec.networking.serviceCidr",
    );
}

#[test]
fn dns_ip_outside_service_cidr() {
    assert_rejected(
        "  controllers:",
        "  networking:\n    clusterDns: 10.244.0.10\n  controllers:",
        "spec.networking.clusterDns",
    );
}

#[test]
fn malformed_cidr() {
    assert_rejected(
        "  controllers:",
        "  networking:\n    podCidr: 10.244.0.0/33\n  controllers:",
        "spec.networking.podCidr",
    );
    assert_rejected(
        "  controllers:",
        "  networking:\n    podCidr: 10.244.1.0/16\n  controllers:",
        "spec.networking.podCidr",
    );
}

#[test]
fn duplicate_hosts() {
    let yaml = format!("{GOOD}    - address: 198.18.0.11\n");
    let problems = problems_for(&yaml);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("spec.controllers[1].address") && p.contains("duplicate")),
        "{problems:#?}"
    );
}

#[test]
fn pin_without_key() {
    assert_rejected(
        "policy: AcceptNew",
        "policy: Pin",
        "spec.controllers[0].hostKey.key",
    );
}

#[test]
fn unknown_host_key_policy() {
    assert_rejected(
        "policy: AcceptNew",
        "policy: AcceptAnything",
        "spec.controllers[0].hostKey.policy",
    );
}

#[test]
fn malformed_pinned_key() {
    assert_rejected(
        "policy: AcceptNew",
        "policy: Pin\n        key: SHA256:short",
        "spec.controllers[0].hostKey.key",
    );
}

#[test]
fn missing_key_file() {
    assert_rejected(
        "      user: root",
        "      user: root\n      privateKeyFile: keys/nope",
        "spec.controllers[0].privateKeyFile",
    );
}

#[test]
fn no_controllers() {
    let yaml = GOOD.split("  controllers:").next().unwrap().to_string() + "  controllers: []\n";
    let problems = problems_for(&yaml);
    assert!(
        problems.iter().any(|p| p.starts_with("spec.controllers")),
        "{problems:#?}"
    );
}

#[test]
fn both_artifact_sources() {
    assert_rejected(
        "  controllers:",
        "  artifacts:\n    bundleDir: /tmp\n    baseUrl: https://mirror.example/k\n  controllers:",
        "spec.artifacts",
    );
}

#[test]
fn base_url_without_sums() {
    assert_rejected(
        "  controllers:",
        "  artifacts:\n    baseUrl: https://mirror.example/k\n  controllers:",
        "spec.artifacts.sha256",
    );
}

#[test]
fn leaf_outliving_ca() {
    assert_rejected(
        "  controllers:",
        "  certificates:\n    caDays: 10\n    leafDays: 20\n  controllers:",
        "spec.certificates.leafDays",
    );
}

#[test]
fn wrong_type() {
    assert_rejected(
        "      user: root",
        "      user: root\n      port: twenty-two",
        "spec.controllers[0].port",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = GOOD
        .replacen("198.18.0.11", "300.0.0.1", 1)
        .replacen("v1.34.10", "v1.20.0", 1);
    let problems = problems_for(&yaml);
    assert!(problems.len() >= 2, "{problems:#?}");
}

// Everything below ends up in a systemd unit, a config file, a kubeconfig,
// known_hosts or a path on disk: no value may add a line, an argument or a
// path component.

#[test]
fn controller_name_cannot_add_an_argument_or_a_line() {
    for bad in [
        "\"ctl-1 --etcd-servers=http://evil:2379\"",
        "\"ctl-1\\nExecStartPre=/bin/sh -c id\"",
        "\"ctl-1'\"",
        "\"Ctl_1\"",
        "\"\"",
        "\"--ctl\"",
    ] {
        assert_rejected(
            "      user: root",
            &format!("      user: root\n      name: {bad}"),
            "spec.controllers[0].name",
        );
    }
}

#[test]
fn a_dns_subdomain_is_a_valid_controller_name() {
    let yaml = GOOD.replacen(
        "      user: root",
        "      user: root\n      name: ctl-1.lab",
        1,
    );
    assert_eq!(problems_for(&yaml), Vec::<String>::new());
}

#[test]
fn address_cannot_add_an_argument_or_a_line() {
    for bad in [
        "\"198.18.0.11 --x\"",
        "\"198.18.0.11\\n--x\"",
        "\"host;id\"",
        "\"$(id)\"",
    ] {
        assert_rejected("198.18.0.11", bad, "spec.controllers[0].address");
    }
}

#[test]
fn ssh_user_is_a_plain_user_name() {
    for bad in [
        "\"root; id\"",
        "\"root\\nx\"",
        "\"-oProxyCommand=id\"",
        "\"a b\"",
        "\"$USER\"",
    ] {
        assert_rejected(
            "user: root",
            &format!("user: {bad}"),
            "spec.controllers[0].user",
        );
    }
    let yaml = GOOD.replacen("user: root", "user: deploy_user-1", 1);
    assert_eq!(problems_for(&yaml), Vec::<String>::new());
}

#[test]
fn bastion_fields_are_checked_too() {
    assert_rejected(
        "      user: root",
        "      user: root\n      bastion:\n        address: jump.example\n        user: \"x y\"",
        "spec.controllers[0].bastion.user",
    );
}

#[test]
fn cidrs_and_dns_ip_must_be_written_canonically() {
    for (field, bad) in [
        ("podCidr", "\"10.244.0.0/16 --x\""),
        ("podCidr", "\"10.244.0.0/16\\n\""),
        ("serviceCidr", "\" 10.96.0.0/12\""),
        ("clusterDns", "\"10.96.0.10 --x\""),
        ("clusterDns", "\"10.96.0.10\\n\""),
    ] {
        assert_rejected(
            "  controllers:",
            &format!("  networking:\n    {field}: {bad}\n  controllers:"),
            &format!("spec.networking.{field}"),
        );
    }
}

#[test]
fn domain_cannot_add_an_argument_or_a_line() {
    for bad in [
        "\"cluster.local --x\"",
        "\"cluster.local\\nx\"",
        "\"cluster.local,evil\"",
        "\"Cluster.Local\"",
    ] {
        assert_rejected(
            "  controllers:",
            &format!("  networking:\n    domain: {bad}\n  controllers:"),
            "spec.networking.domain",
        );
    }
}

#[test]
fn pinned_key_is_one_line() {
    assert_rejected(
        "policy: AcceptNew",
        "policy: Pin\n        key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\\n@cert-authority * ssh-ed25519 AAAA\"",
        "spec.controllers[0].hostKey.key",
    );
}

#[test]
fn base_url_is_one_url() {
    assert_rejected(
        "  controllers:",
        "  artifacts:\n    baseUrl: \"https://mirror.example/k\\nx\"\n    sha256: {kubelet: 0000000000000000000000000000000000000000000000000000000000000000}\n  controllers:",
        "spec.artifacts.baseUrl",
    );
}

#[test]
fn artifact_file_names_stay_inside_the_bundle() {
    for bad in [
        "\"../../etc/passwd\"",
        "/etc/passwd",
        "\"bin/a b\"",
        "\"bin/../../x\"",
    ] {
        assert_rejected(
            "  controllers:",
            &format!(
                "  artifacts:\n    baseUrl: https://mirror.example/k\n    sha256: {{{bad}: 0000000000000000000000000000000000000000000000000000000000000000}}\n  controllers:"
            ),
            "spec.artifacts.sha256",
        );
    }
}

#[test]
fn certificate_lifetimes_are_bounded() {
    for (yaml, field) in [
        (
            "caDays: 36501\n    leafDays: 365",
            "spec.certificates.caDays",
        ),
        (
            "caDays: 4294967295\n    leafDays: 365",
            "spec.certificates.caDays",
        ),
        (
            "caDays: 36500\n    leafDays: 3651",
            "spec.certificates.leafDays",
        ),
        (
            "caDays: 36500\n    leafDays: 4294967295",
            "spec.certificates.leafDays",
        ),
        ("caDays: 0\n    leafDays: 0", "spec.certificates"),
    ] {
        assert_rejected(
            "  controllers:",
            &format!("  certificates:\n    {yaml}\n  controllers:"),
            field,
        );
    }
    let yaml = GOOD.replacen(
        "  controllers:",
        "  certificates:\n    caDays: 36500\n    leafDays: 3650\n  controllers:",
        1,
    );
    assert_eq!(problems_for(&yaml), Vec::<String>::new());
}

#[test]
fn kubelet_eviction_is_upstream_unless_relaxed() {
    let cluster = parse(GOOD, Path::new("/")).expect("valid");
    assert!(!cluster.spec.kubelet.relaxed_eviction);
    let yaml = GOOD.replacen(
        "  controllers:",
        "  kubelet:\n    relaxedEviction: true\n  controllers:",
        1,
    );
    let cluster = parse(&yaml, Path::new("/")).expect("valid");
    assert!(cluster.spec.kubelet.relaxed_eviction);
}

const THREE: &str = r#"
apiVersion: kubeup.dev/v1alpha1
kind: Cluster
metadata:
  name: demo
spec:
  controllers:
    - address: 198.18.0.11
    - address: 198.18.0.12
    - address: 198.18.0.13
  controlPlaneEndpoint:
    address: 198.18.0.100
"#;

#[test]
fn three_controllers_with_a_virtual_ip_are_accepted() {
    let cluster = parse(THREE, Path::new("/nonexistent-dir")).unwrap();
    let e = cluster.spec.control_plane_endpoint.unwrap();
    assert_eq!(e.kind, kubeup_crds::cluster::EndpointKind::VirtualIP);
    assert_eq!((e.port, e.virtual_router_id), (6443, 51));
}

#[test]
fn an_even_number_of_controllers_is_refused_with_the_arithmetic() {
    let yaml = THREE.replace(
        "    - address: 198.18.0.13\n",
        "    - address: 198.18.0.13\n    - address: 198.18.0.14\n",
    );
    let problems = problems_for(&yaml);
    assert!(
        problems.iter().any(|p| p.starts_with("spec.controllers")
            && p.contains("3 of 4 members for a majority")
            && p.contains("survive 1 failure")),
        "{problems:?}"
    );
}

#[test]
fn a_virtual_ip_is_a_free_plain_ipv4_address_outside_the_cluster_networks() {
    let field = "spec.controlPlaneEndpoint";
    for (bad, why) in [
        ("198.18.0.12", "controller"),
        ("10.96.0.50", "serviceCidr"),
        ("10.244.3.1", "podCidr"),
        ("api.example.com", "IPv4"),
        ("127.0.0.5", "loopback"),
        ("198.18.0.0100", ""),
    ] {
        let yaml = THREE.replace("address: 198.18.0.100", &format!("address: {bad}"));
        let problems = problems_for(&yaml);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(field) && p.contains(why)),
            "{bad}: {problems:?}"
        );
    }
    let yaml = THREE.replace(
        "address: 198.18.0.100",
        "address: 198.18.0.100\n    port: 443",
    );
    assert!(
        problems_for(&yaml)
            .iter()
            .any(|p| p.starts_with("spec.controlPlaneEndpoint.port"))
    );
}

#[test]
fn a_load_balancer_may_be_a_dns_name_on_another_port() {
    let yaml = THREE.replace(
        "address: 198.18.0.100",
        "address: api.example.com\n    kind: LoadBalancer\n    port: 443",
    );
    assert_eq!(problems_for(&yaml), Vec::<String>::new());
}

const DEDICATED: &str = r#"
apiVersion: kubeup.dev/v1alpha1
kind: Cluster
metadata:
  name: demo
spec:
  controllers:
    - address: 198.18.0.11
    - address: 198.18.0.12
  etcd:
    external:
      - address: 198.18.0.21
      - address: 198.18.0.22
        name: etcd-b
      - address: 198.18.0.23
"#;

#[test]
fn dedicated_etcd_hosts_are_accepted_and_free_the_controller_count() {
    // Two apiservers are fine when etcd keeps its majority elsewhere.
    let cluster = parse(DEDICATED, Path::new("/nonexistent-dir")).unwrap();
    assert_eq!(cluster.spec.etcd.external.len(), 3);
    assert_eq!(
        cluster.spec.etcd.external[1].name.as_deref(),
        Some("etcd-b")
    );
    assert!(!cluster.spec.etcd.is_stacked());
}

#[test]
fn dedicated_etcd_hosts_are_checked_like_controllers() {
    for (from, to, field, why) in [
        // An even member count, with the arithmetic.
        (
            "      - address: 198.18.0.23\n",
            "      - address: 198.18.0.23\n      - address: 198.18.0.24\n",
            "spec.etcd.external",
            "3 of 4 members for a majority",
        ),
        // A machine is a controller or an etcd host, not both.
        (
            "address: 198.18.0.21",
            "address: 198.18.0.11",
            "spec.etcd.external[0].address",
            "duplicate host",
        ),
        (
            "address: 198.18.0.23",
            "address: \"198.18.0.23 --x\"",
            "spec.etcd.external[2].address",
            "not a usable",
        ),
        (
            "name: etcd-b",
            "name: \"etcd b\"",
            "spec.etcd.external[1].name",
            "not a valid",
        ),
        (
            "    - address: 198.18.0.12\n",
            "    - address: 198.18.0.12\n      name: etcd-b\n",
            "spec.etcd.external[1].name",
            "given twice",
        ),
    ] {
        let yaml = DEDICATED.replacen(from, to, 1);
        let problems = problems_for(&yaml);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(field) && p.contains(why)),
            "{to}: {problems:?}"
        );
    }
    // Without dedicated hosts two controllers are an even etcd again.
    let stacked = DEDICATED.split("  etcd:").next().unwrap();
    assert!(
        problems_for(stacked)
            .iter()
            .any(|p| p.starts_with("spec.controllers") && p.contains("2 of 2 members"))
    );
}
