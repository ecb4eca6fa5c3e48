//! Rendered units and configuration compared with checked-in files, so a
//! change in what lands on hosts shows up in review. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p kubeup-provision --test hostplan_golden`.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::PathBuf;

use kubeup_crds::cluster::Cni;
use kubeup_provision::hostplan::configs::Eviction;
use kubeup_provision::hostplan::{
    ControllerInput, EtcdMember, EtcdPlacement, HostFile, NodeInput, apilb, configs, network,
    units, worker,
};

fn node() -> NodeInput {
    NodeInput {
        node_name: "ctl-1".into(),
        address: "192.0.2.10".into(),
        kubernetes_version: "v1.34.10".into(),
        api_backends: vec![
            "192.0.2.10".into(),
            "192.0.2.12".into(),
            "192.0.2.13".into(),
        ],
        cluster_dns: "10.96.0.10".into(),
        cluster_domain: "cluster.local".into(),
        pod_cidr: "10.244.0.0/16".into(),
        pause_image: "registry.k8s.io/pause:3.10.1".into(),
        register_taints: vec!["node-role.kubernetes.io/control-plane:NoSchedule".into()],
    }
}

/// The first of three controllers behind a virtual IP: the rendering
/// names them all.
fn controller() -> ControllerInput {
    ControllerInput {
        node: node(),
        cluster_name: "demo".into(),
        service_cidr: "10.96.0.0/12".into(),
        etcd: EtcdPlacement::Stacked(EtcdMember {
            name: "ctl-1".into(),
            address: "192.0.2.10".into(),
            kubernetes_version: "v1.34.10".into(),
            cluster_name: "demo".into(),
            members: vec![
                ("ctl-1".into(), "192.0.2.10".into()),
                ("ctl-2".into(), "192.0.2.12".into()),
                ("ctl-3".into(), "192.0.2.13".into()),
            ],
            joins_existing: false,
        }),
        endpoint: Some("192.0.2.100".into()),
        vip: Some(apilb::VipInput {
            address: "192.0.2.100".into(),
            router_id: 51,
            interface: "eth0".into(),
            peers: vec!["192.0.2.12".into(), "192.0.2.13".into()],
        }),
    }
}

fn rendered() -> Vec<(String, HostFile)> {
    let c = controller();
    let mut files = vec![
        units::containerd(&c.node),
        units::etcd(c.etcd.local().unwrap()),
        units::etcd_bootstrap_env(c.etcd.local().unwrap()),
        units::kube_apiserver(&c),
        units::kube_controller_manager(&c),
        units::kube_scheduler(&c),
        units::kubelet(&c.node),
        units::kube_proxy(&c.node),
        configs::kubelet_config(&c.node, false, Eviction::Upstream),
        configs::kube_proxy_config(&c.node),
        configs::containerd_config(&c.node),
        network::cni_conflist(Cni::Flannel, "10.244.1.0/24").unwrap(),
        configs::encryption_config(KEY),
        configs::audit_policy(),
        configs::authentication_config(),
        apilb::keepalived_config("ctl-1", "192.0.2.10", c.vip.as_ref().unwrap()),
        apilb::keepalived_unit(),
    ];
    files.extend(apilb::node_files(&c.node));
    files.extend(configs::controller_kubeconfigs("demo"));
    files.extend(configs::node_kubeconfigs("demo", &c.node));
    let mut out: Vec<(String, HostFile)> = files
        .into_iter()
        .map(|f| (format!("controller{}", f.path.replace('/', "_")), f))
        .collect();
    let mut w = node();
    w.node_name = "worker-1".into();
    w.address = "192.0.2.11".into();
    w.register_taints.clear();
    out.extend(
        worker::worker_files(&w, "demo")
            .into_iter()
            .map(|f| (format!("worker{}", f.path.replace('/', "_")), f)),
    );
    // spec.kubelet.relaxedEviction (the sandbox): only the kubelet config differs.
    out.extend(
        worker::worker_files_with(&w, "demo", Eviction::Relaxed)
            .into_iter()
            .filter(|f| f.path.ends_with("kubelet-config.yaml"))
            .map(|f| (format!("worker-relaxed{}", f.path.replace('/', "_")), f)),
    );
    out
}

const KEY: &str = "c2VjcmV0LWtleS1ub3QtcmVhbC0zMi1ieXRlcy0hISE=";

fn text(f: &HostFile) -> String {
    String::from_utf8(f.content.clone()).unwrap()
}

fn yaml(f: &HostFile) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_slice(&f.content).unwrap()
}

fn golden_dir() -> PathBuf {
    kubeup_testsupport::crate_dir().join("tests/golden")
}

#[test]
fn rendered_files_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatched = vec![];
    for (name, file) in rendered() {
        let path = golden_dir().join(&name);
        if update {
            std::fs::write(&path, &file.content).unwrap();
            continue;
        }
        let expected = std::fs::read(&path).unwrap_or_default();
        if expected != file.content {
            mismatched.push(name);
        }
    }
    assert!(
        mismatched.is_empty(),
        "rendering changed for {mismatched:?}: review, then regenerate with UPDATE_GOLDEN=1"
    );
}

#[test]
fn rendering_is_deterministic() {
    let a: Vec<Vec<u8>> = rendered().into_iter().map(|(_, f)| f.content).collect();
    let b: Vec<Vec<u8>> = rendered().into_iter().map(|(_, f)| f.content).collect();
    assert_eq!(a, b);
}

#[test]
fn secrets_are_written_with_secretbox_and_old_aescbc_ones_still_read() {
    let cfg = yaml(&configs::encryption_config(KEY));
    let providers = &cfg["resources"][0]["providers"];
    let names: Vec<String> = providers
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_mapping()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["secretbox", "aescbc", "identity"]);
    for p in ["secretbox", "aescbc"] {
        let key = &providers[if p == "secretbox" { 0 } else { 1 }][p]["keys"][0];
        assert_eq!(key["name"].as_str(), Some("key1"));
        assert_eq!(key["secret"].as_str(), Some(KEY));
    }
    assert_eq!(
        cfg["resources"][0]["resources"][0].as_str(),
        Some("secrets")
    );
}

/// The level the first matching rule of `policy` gives a request.
fn audit_level(
    policy: &serde_yaml_ng::Value,
    user: &str,
    groups: &[&str],
    verb: &str,
    resource: Option<(&str, &str)>,
    url: &str,
) -> String {
    let list = |v: &serde_yaml_ng::Value| -> Option<Vec<String>> {
        v.as_sequence()
            .map(|s| s.iter().map(|x| x.as_str().unwrap().to_string()).collect())
    };
    for rule in policy["rules"].as_sequence().unwrap() {
        if list(&rule["users"]).is_some_and(|u| !u.iter().any(|x| x == user)) {
            continue;
        }
        if list(&rule["userGroups"])
            .is_some_and(|g| !g.iter().any(|x| groups.contains(&x.as_str())))
        {
            continue;
        }
        if list(&rule["verbs"]).is_some_and(|v| !v.iter().any(|x| x == verb)) {
            continue;
        }
        let matches = match resource {
            Some((group, res)) => {
                if rule["nonResourceURLs"].as_sequence().is_some() {
                    false
                } else if let Some(rs) = rule["resources"].as_sequence() {
                    rs.iter().any(|gr| {
                        gr["group"].as_str() == Some(group)
                            && list(&gr["resources"]).is_some_and(|r| r.iter().any(|x| x == res))
                    })
                } else {
                    true
                }
            }
            None => match list(&rule["nonResourceURLs"]) {
                Some(urls) => urls.iter().any(|u| match u.strip_suffix('*') {
                    Some(prefix) => url.starts_with(prefix),
                    None => u == url,
                }),
                None => rule["resources"].as_sequence().is_none(),
            },
        };
        if matches {
            return rule["level"].as_str().unwrap().to_string();
        }
    }
    "None".into()
}

#[test]
fn the_audit_policy_logs_sensitive_resources_at_metadata_and_drops_noise() {
    let file = configs::audit_policy();
    assert_eq!(file.path, "/etc/kubernetes/audit-policy.yaml");
    assert_eq!(file.mode, 0o600);
    let policy = yaml(&file);
    assert_eq!(policy["apiVersion"].as_str(), Some("audit.k8s.io/v1"));
    assert_eq!(policy["kind"].as_str(), Some("Policy"));
    // No rule ever records a body: the log cannot hold Secret data.
    let body = text(&file);
    assert!(!body.contains("level: Request"), "{body}");
    let admin = ("kubernetes-admin", &["kubeup:cluster-admins"][..]);
    let node = ("system:node:n1", &["system:nodes"][..]);
    for (group, res) in [
        ("", "secrets"),
        ("", "configmaps"),
        ("", "serviceaccounts/token"),
        ("authentication.k8s.io", "tokenreviews"),
        ("certificates.k8s.io", "certificatesigningrequests"),
        ("certificates.k8s.io", "certificatesigningrequests/approval"),
    ] {
        for (user, groups) in [admin, node] {
            for verb in ["get", "list", "create", "update"] {
                assert_eq!(
                    audit_level(&policy, user, groups, verb, Some((group, res)), ""),
                    "Metadata",
                    "{verb} {group}/{res} by {user}"
                );
            }
        }
    }
    let none = |user: &str, groups: &[&str], verb: &str, r: Option<(&str, &str)>, url: &str| {
        assert_eq!(
            audit_level(&policy, user, groups, verb, r, url),
            "None",
            "{verb} {r:?} {url} by {user}"
        );
    };
    none(admin.0, admin.1, "create", Some(("", "events")), "");
    none(
        admin.0,
        admin.1,
        "list",
        Some(("events.k8s.io", "events")),
        "",
    );
    none(
        node.0,
        node.1,
        "update",
        Some(("coordination.k8s.io", "leases")),
        "",
    );
    none(
        "system:apiserver",
        &["system:masters"],
        "update",
        Some(("coordination.k8s.io", "leases")),
        "",
    );
    none(
        "system:kube-scheduler",
        &[],
        "get",
        Some(("coordination.k8s.io", "leases")),
        "",
    );
    none(
        "system:kube-proxy",
        &[],
        "watch",
        Some(("discovery.k8s.io", "endpointslices")),
        "",
    );
    for url in ["/healthz", "/readyz?verbose", "/livez", "/version"] {
        none("system:anonymous", &[], "get", None, url);
    }
    // Everything else: metadata.
    assert_eq!(
        audit_level(&policy, admin.0, admin.1, "delete", Some(("", "pods")), ""),
        "Metadata"
    );
    assert_eq!(
        audit_level(
            &policy,
            admin.0,
            admin.1,
            "delete",
            Some(("coordination.k8s.io", "leases")),
            ""
        ),
        "Metadata"
    );
    assert_eq!(
        audit_level(&policy, admin.0, admin.1, "get", None, "/apis"),
        "Metadata"
    );
}

#[test]
fn the_apiserver_writes_the_audit_log_into_a_directory_systemd_makes() {
    let c = controller();
    let unit = text(&units::kube_apiserver(&c));
    for flag in [
        "--audit-policy-file=/etc/kubernetes/audit-policy.yaml",
        "--audit-log-path=/var/log/kubernetes/audit.log",
        "--audit-log-maxsize=100",
        "--audit-log-maxbackup=5",
        "--audit-log-maxage=30",
    ] {
        assert!(
            unit.contains(&format!("  {flag}")),
            "{flag} missing:\n{unit}"
        );
    }
    assert!(unit.contains("\nLogsDirectory=kubernetes\n"), "{unit}");
    assert!(
        kubeup_provision::hostplan::layout::DATA_DIRS.contains(&"/var/log/kubernetes"),
        "reset must remove the audit log directory"
    );
}

#[test]
fn kubelets_keep_upstream_eviction_unless_relaxed() {
    let upstream = text(&configs::kubelet_config(&node(), false, Eviction::Upstream));
    for absent in ["evictionHard", "imageGC", "0%"] {
        assert!(!upstream.contains(absent), "{absent}:\n{upstream}");
    }
    let worker = worker::worker_files(&node(), "demo");
    let cfg = worker
        .iter()
        .find(|f| f.path.ends_with("kubelet-config.yaml"))
        .unwrap();
    assert!(!text(cfg).contains("evictionHard"), "{}", text(cfg));
    let relaxed = yaml(&configs::kubelet_config(&node(), false, Eviction::Relaxed));
    assert_eq!(
        relaxed["evictionHard"]["nodefs.available"].as_str(),
        Some("0%")
    );
    assert_eq!(relaxed["imageGCHighThresholdPercent"].as_u64(), Some(100));
    let spec: kubeup_crds::cluster::KubeletSettings = Default::default();
    assert_eq!(Eviction::from_spec(&spec), Eviction::Upstream);
}
