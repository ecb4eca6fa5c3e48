//! Semantic checks on a parsed `Cluster`: everything the schema cannot say.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::Ipv4Net;
use kubeup_crds::cluster::{
    Artifacts, CertificateLifetimes, ClusterSpec, ControlPlaneEndpoint, ControllerHost,
    EndpointKind, Networking,
};
use kubeup_crds::host::{HostKeyPolicy, HostKeyTrust};
use kubeup_crds::{API_VERSION, Cluster};

use super::Problem;

const TOP_LEVEL: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// apiVersion, kind and the top-level keys, checked before typed parsing so
/// the message is about the document, not about serde.
pub(crate) fn document_shape(value: &serde_yaml_ng::Value) -> Vec<Problem> {
    let mut problems = vec![];
    let Some(map) = value.as_mapping() else {
        return vec![Problem::new(
            "(file)",
            "the document is not a mapping",
            "start from `kubeup init`'s cluster.yaml",
        )];
    };
    for key in map.keys() {
        let key = key.as_str().unwrap_or("?");
        if !TOP_LEVEL.contains(&key) {
            problems.push(Problem::new(
                key,
                "unknown top-level field",
                "allowed: apiVersion, kind, metadata, spec",
            ));
        }
    }
    match map.get("apiVersion").and_then(|v| v.as_str()) {
        Some(API_VERSION) => {}
        Some(other) => problems.push(Problem::new(
            "apiVersion",
            format!("unsupported apiVersion {other:?}"),
            format!("use {API_VERSION}"),
        )),
        None => problems.push(Problem::new(
            "apiVersion",
            "missing",
            format!("add `apiVersion: {API_VERSION}`"),
        )),
    }
    match map.get("kind").and_then(|v| v.as_str()) {
        Some("Cluster") => {}
        Some(other) => problems.push(Problem::new(
            "kind",
            format!("expected Cluster, found {other:?}"),
            "use `kind: Cluster`",
        )),
        None => problems.push(Problem::new("kind", "missing", "add `kind: Cluster`")),
    }
    if map.get("spec").is_none() {
        problems.push(Problem::new(
            "spec",
            "missing",
            "add a spec with at least one controller",
        ));
    }
    problems
}

/// Every semantic problem of `cluster`; paths in the spec resolve against `dir`.
pub fn validate(cluster: &Cluster, dir: &Path) -> Vec<Problem> {
    let mut p = vec![];
    match cluster.metadata.name.as_deref() {
        Some(name) if is_dns_label(name) => {}
        Some(name) => p.push(Problem::new(
            "metadata.name",
            format!("{name:?} is not a DNS label"),
            "use lowercase letters, digits and '-', at most 63 characters",
        )),
        None => p.push(Problem::new(
            "metadata.name",
            "missing",
            "name the cluster, e.g. `name: homelab`",
        )),
    }
    let spec = &cluster.spec;
    if !is_supported_version(&spec.kubernetes_version) {
        p.push(Problem::new(
            "spec.kubernetesVersion",
            format!("unsupported version {:?}", spec.kubernetes_version),
            "kubeup supports v1.34.x (the last minor whose kubelet runs on cgroup v1 by default)",
        ));
    }
    let dedicated = spec.etcd.external.len();
    match (spec.controllers.len(), dedicated) {
        (0, _) => p.push(Problem::new(
            "spec.controllers",
            "no controller given",
            "add the machine that runs the control plane",
        )),
        // With dedicated etcd hosts the apiservers need no majority.
        (1..=5, 1..) | (1 | 3 | 5, 0) => {}
        (n, 0) if n % 2 == 0 => p.push(even_members("spec.controllers", n)),
        (n, _) => p.push(Problem::new(
            "spec.controllers",
            format!("{n} controllers given; kubeup runs at most 5"),
            "list 1, 3 or 5 controllers: more members make every etcd write slower",
        )),
    }
    match dedicated {
        0 | 1 | 3 | 5 => {}
        n if n % 2 == 0 => p.push(even_members("spec.etcd.external", n)),
        n => p.push(Problem::new(
            "spec.etcd.external",
            format!("{n} etcd hosts given; kubeup runs at most 5"),
            "list 1, 3 or 5 etcd hosts: more members make every etcd write slower",
        )),
    }
    // One list of machines: a host is a controller or an etcd host, once.
    let mut seen = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (list, hosts) in [
        ("spec.controllers", &spec.controllers),
        ("spec.etcd.external", &spec.etcd.external),
    ] {
        for (i, c) in hosts.iter().enumerate() {
            check_host(&mut p, &format!("{list}[{i}]"), c, dir, &mut seen);
            if let Some(name) = &c.name
                && !names.insert(name.clone())
            {
                p.push(Problem::new(
                    format!("{list}[{i}].name"),
                    format!("the name {name} is given twice"),
                    "give each machine its own name (Node and etcd member names are unique)",
                ));
            }
        }
    }
    check_networking(&mut p, &spec.networking);
    if let Some(e) = &spec.control_plane_endpoint {
        check_endpoint(&mut p, e, spec);
    }
    check_artifacts(&mut p, &spec.artifacts, dir);
    check_lifetimes(&mut p, &spec.certificates);
    p.extend(crate::addons::validate(&spec.addons));
    p
}

/// An even number of etcd members: the majority arithmetic, in words.
fn even_members(path: &str, n: usize) -> Problem {
    Problem::new(
        path,
        format!(
            "{n} etcd members given: etcd needs {} of {n} members for a majority, so {n} survive {} failure(s), no more than {} would",
            n / 2 + 1,
            (n - 1) / 2,
            n - 1
        ),
        "list 1, 3 or 5 (3 survive one failure, 5 survive two)",
    )
}

/// One machine reached over SSH (a controller or an etcd host) at `path`.
fn check_host(
    p: &mut Vec<Problem>,
    path: &str,
    c: &ControllerHost,
    dir: &Path,
    seen: &mut BTreeSet<(String, u16)>,
) {
    check_address(p, &format!("{path}.address"), &c.address);
    if c.port == 0 {
        p.push(Problem::new(
            format!("{path}.port"),
            "port 0 is not a valid SSH port",
            "use 1-65535, usually 22",
        ));
    }
    check_user(p, &format!("{path}.user"), &c.user);
    check_controller_name(p, path, c);
    if !seen.insert((c.address.clone(), c.port)) {
        p.push(Problem::new(
            format!("{path}.address"),
            format!("duplicate host {}:{}", c.address, c.port),
            "list each machine once: a controller or an etcd host, not both",
        ));
    }
    check_host_key(p, &format!("{path}.hostKey"), &c.host_key);
    if let Some(key) = &c.private_key_file {
        let resolved = super::resolve(dir, key);
        if !resolved.is_file() {
            p.push(Problem::new(
                format!("{path}.privateKeyFile"),
                format!("{} does not exist", resolved.display()),
                "give the path of the SSH private key (relative to the cluster directory), or remove it to use ssh-agent",
            ));
        }
    }
    if let Some(b) = &c.bastion {
        check_address(p, &format!("{path}.bastion.address"), &b.address);
        check_user(p, &format!("{path}.bastion.user"), &b.user);
        check_host_key(p, &format!("{path}.bastion.hostKey"), &b.host_key);
    }
}

fn is_supported_version(v: &str) -> bool {
    v.strip_prefix("v1.34.")
        .is_some_and(|patch| !patch.is_empty() && patch.chars().all(|c| c.is_ascii_digit()))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A Node name as Kubernetes accepts it (a lowercase RFC 1123 subdomain).
/// It lands in unit flags (`--name`, `--hostname-override`), certificate
/// subjects and kubeconfigs, so nothing else may pass: no space, quote,
/// newline or leading `-`.
pub fn is_node_name(s: &str) -> bool {
    is_dns_name(s) && !s.chars().any(|c| c.is_ascii_uppercase())
}

fn check_controller_name(p: &mut Vec<Problem>, path: &str, c: &ControllerHost) {
    let Some(name) = &c.name else { return };
    if !is_node_name(name) {
        p.push(Problem::new(
            format!("{path}.name"),
            format!("{name:?} is not a valid Node name"),
            "use lowercase letters, digits, '-' and '.', e.g. ctl-1, or remove it to use the hostname",
        ));
    }
}

/// An SSH login name: the portable user-name characters only, so it can
/// never read as an option or carry a second word.
fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn check_user(p: &mut Vec<Problem>, path: &str, user: &str) {
    if !is_user_name(user) {
        p.push(Problem::new(
            path,
            format!("{user:?} is not a valid SSH user name"),
            "use root or a user with sudo: letters, digits, '.', '_' and '-', at most 32 characters",
        ));
    }
}

fn check_address(p: &mut Vec<Problem>, path: &str, address: &str) {
    let looks_numeric = address.chars().all(|c| c.is_ascii_digit() || c == '.');
    let ok = match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast(),
        Ok(IpAddr::V6(_)) => false,
        Err(_) => !looks_numeric && is_dns_name(address),
    };
    if !ok {
        p.push(Problem::new(
            path,
            format!("{address:?} is not a usable IPv4 address or DNS name"),
            "give the machine's address as reachable over SSH, e.g. 192.0.2.10 or node1.example.com",
        ));
    }
}

fn check_host_key(p: &mut Vec<Problem>, path: &str, trust: &HostKeyTrust) {
    match (&trust.policy, &trust.key) {
        (HostKeyPolicy::Pin, None) => p.push(Problem::new(
            format!("{path}.key"),
            "policy Pin needs a key",
            "paste the host's public key (`ssh-keyscan HOST`) or its SHA256: fingerprint, or use policy AcceptNew",
        )),
        (_, Some(key)) if !is_host_key(key) => p.push(Problem::new(
            format!("{path}.key"),
            "not an OpenSSH public key or SHA256: fingerprint",
            "use a line like `ssh-ed25519 AAAA…` or `SHA256:…` as printed by `ssh-keygen -lf`",
        )),
        _ => {}
    }
}

fn is_host_key(key: &str) -> bool {
    // The key becomes a known_hosts line: one line, nothing hidden in it.
    if key.chars().any(char::is_control) {
        return false;
    }
    if let Some(fp) = key.strip_prefix("SHA256:") {
        return fp.trim_end_matches('=').len() == 43
            && fp
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    }
    let mut parts = key.split_whitespace();
    let algo_ok = parts
        .next()
        .is_some_and(|a| a.starts_with("ssh-") || a.starts_with("ecdsa-sha2-"));
    let body_ok = parts.next().is_some_and(|b| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(b).is_ok()
    });
    algo_ok && body_ok
}

fn check_networking(p: &mut Vec<Problem>, n: &Networking) {
    let pod = parse_cidr(p, "spec.networking.podCidr", &n.pod_cidr);
    let svc = parse_cidr(p, "spec.networking.serviceCidr", &n.service_cidr);
    if let Some(pod) = pod
        && pod.prefix_len() > 22
    {
        p.push(Problem::new(
            "spec.networking.podCidr",
            format!("{pod} is too small: each node gets a /24"),
            "use a /16 (e.g. 10.244.0.0/16) or at least a /22",
        ));
    }
    if let (Some(pod), Some(svc)) = (pod, svc)
        && (pod.contains(&svc.network()) || svc.contains(&pod.network()))
    {
        p.push(Problem::new(
            "spec.networking.serviceCidr",
            format!("{svc} overlaps podCidr {pod}"),
            "choose ranges that do not overlap, e.g. pods 10.244.0.0/16 and services 10.96.0.0/12",
        ));
    }
    match n.cluster_dns.parse::<Ipv4Addr>() {
        // The text is rendered into the kubelet config: canonical form only.
        Ok(ip) if ip.to_string() != n.cluster_dns => p.push(Problem::new(
            "spec.networking.clusterDns",
            format!("{:?} is not written as a plain IPv4 address", n.cluster_dns),
            format!("write it as {ip}"),
        )),
        Err(_) => p.push(Problem::new(
            "spec.networking.clusterDns",
            format!("{:?} is not an IPv4 address", n.cluster_dns),
            "use an address inside serviceCidr, e.g. 10.96.0.10",
        )),
        Ok(ip) => {
            if let Some(svc) = svc {
                if !svc.contains(&ip) {
                    p.push(Problem::new(
                        "spec.networking.clusterDns",
                        format!("{ip} is outside serviceCidr {svc}"),
                        "pick an address inside serviceCidr, e.g. its .10",
                    ));
                } else if ip == svc.network() || Some(ip) == first_service_ip(svc) {
                    p.push(Problem::new(
                        "spec.networking.clusterDns",
                        format!("{ip} is reserved (network address or the `kubernetes` Service)"),
                        "pick another address inside serviceCidr, e.g. its .10",
                    ));
                }
            }
        }
    }
    if !is_node_name(&n.domain) {
        p.push(Problem::new(
            "spec.networking.domain",
            format!("{:?} is not a DNS domain", n.domain),
            "lowercase letters, digits, '-' and '.', e.g. cluster.local",
        ));
    }
}

/// The endpoint is a client-facing address: never a controller's own, never
/// inside the pod or Service network (kube-proxy and flannel own those), and
/// a virtual IP is a plain IPv4 address on the apiservers' port.
fn check_endpoint(p: &mut Vec<Problem>, e: &ControlPlaneEndpoint, spec: &ClusterSpec) {
    const PATH: &str = "spec.controlPlaneEndpoint";
    check_address(p, &format!("{PATH}.address"), &e.address);
    let ip = e.address.parse::<Ipv4Addr>().ok();
    if let Some(ip) = ip {
        if ip.to_string() != e.address {
            p.push(Problem::new(
                format!("{PATH}.address"),
                format!("{:?} is not written as a plain IPv4 address", e.address),
                format!("write it as {ip}"),
            ));
        }
        if ip.is_loopback() || ip.is_link_local() {
            p.push(Problem::new(
                format!("{PATH}.address"),
                format!("{ip} is a loopback or link-local address"),
                "use an address every client and controller can reach",
            ));
        }
        for (field, cidr) in [
            ("podCidr", &spec.networking.pod_cidr),
            ("serviceCidr", &spec.networking.service_cidr),
        ] {
            if let Ok(net) = cidr.parse::<Ipv4Net>()
                && net.contains(&ip)
            {
                p.push(Problem::new(
                    format!("{PATH}.address"),
                    format!("{ip} is inside networking.{field} {net}"),
                    "use an address of the controllers' own network",
                ));
            }
        }
    }
    match e.kind {
        EndpointKind::VirtualIP => {
            if ip.is_none() {
                p.push(Problem::new(
                    format!("{PATH}.address"),
                    format!("a VirtualIP must be an IPv4 address, not {:?}", e.address),
                    "give a free address of the controllers' network, or use kind LoadBalancer for a DNS name",
                ));
            }
            for (i, c) in spec.controllers.iter().enumerate() {
                if c.address.parse::<Ipv4Addr>().is_err() {
                    p.push(Problem::new(
                        format!("spec.controllers[{i}].address"),
                        format!(
                            "{:?} is a name: keepalived's VRRP peers are addresses",
                            c.address
                        ),
                        "give the controllers' IPv4 addresses with a VirtualIP endpoint",
                    ));
                }
            }
            if let Some(c) = spec.controllers.iter().find(|c| c.address == e.address) {
                p.push(Problem::new(
                    format!("{PATH}.address"),
                    format!("{} is the controller {}'s own address", e.address, c.address),
                    "a virtual IP must be a free address that keepalived moves between the controllers",
                ));
            }
            if let Some(c) = spec.etcd.external.iter().find(|c| c.address == e.address) {
                p.push(Problem::new(
                    format!("{PATH}.address"),
                    format!("{} is the etcd host {}'s own address", e.address, c.address),
                    "a virtual IP must be a free address that keepalived moves between the controllers",
                ));
            }
            if e.port != kubeup_crds::cluster::API_PORT {
                p.push(Problem::new(
                    format!("{PATH}.port"),
                    format!(
                        "a VirtualIP serves the apiservers' port 6443, not {}",
                        e.port
                    ),
                    "remove port, or use kind LoadBalancer to map another port",
                ));
            }
        }
        EndpointKind::LoadBalancer => {
            if e.port == 0 {
                p.push(Problem::new(
                    format!("{PATH}.port"),
                    "port 0 is not a valid port",
                    "use the load balancer's port, usually 6443",
                ));
            }
        }
    }
}

/// The `kubernetes` Service's address: the first usable one of the range.
pub fn first_service_ip(svc: Ipv4Net) -> Option<Ipv4Addr> {
    svc.hosts().next()
}

fn parse_cidr(p: &mut Vec<Problem>, path: &str, s: &str) -> Option<Ipv4Net> {
    match s.parse::<Ipv4Net>() {
        // Only the canonical spelling: the text itself is rendered into flags.
        Ok(net) if net.trunc() == net && net.to_string() == s => Some(net),
        Ok(net) if net.trunc() == net => {
            p.push(Problem::new(
                path,
                format!("{s:?} is not written as a plain CIDR"),
                format!("write it as {net}"),
            ));
            None
        }
        Ok(net) => {
            p.push(Problem::new(
                path,
                format!("{s} has host bits set"),
                format!("did you mean {}?", net.trunc()),
            ));
            None
        }
        Err(_) => {
            p.push(Problem::new(
                path,
                format!("{s:?} is not an IPv4 CIDR"),
                "write it like 10.244.0.0/16",
            ));
            None
        }
    }
}

fn check_artifacts(p: &mut Vec<Problem>, a: &Artifacts, dir: &Path) {
    if a.bundle_dir.is_some() && a.base_url.is_some() {
        p.push(Problem::new(
            "spec.artifacts",
            "both bundleDir and baseUrl are set",
            "keep one of them",
        ));
    }
    if let Some(url) = &a.base_url {
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            p.push(Problem::new(
                "spec.artifacts.baseUrl",
                format!("{url:?} is not an http(s) URL"),
                "e.g. https://mirror.example/kubeup/v1.34.10",
            ));
        }
        if a.sha256.is_empty() {
            p.push(Problem::new(
                "spec.artifacts.sha256",
                "baseUrl needs a pinned sha256 for every file",
                "copy the sums from the bundle's bundle.json",
            ));
        }
    }
    for (file, sum) in &a.sha256 {
        if !is_bundle_file_name(file) {
            p.push(Problem::new(
                format!("spec.artifacts.sha256.{}", file.escape_debug()),
                format!("{file:?} is not a file name inside the bundle"),
                "use the relative names of bundle.json, e.g. bin/kubelet",
            ));
        }
        if sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
            p.push(Problem::new(
                format!("spec.artifacts.sha256.{file}"),
                "not a sha256 in hex",
                "64 hex digits, as `sha256sum` prints",
            ));
        }
    }
    if let Some(b) = &a.bundle_dir {
        let resolved = super::resolve(dir, b);
        if !resolved.is_dir() {
            p.push(Problem::new(
                "spec.artifacts.bundleDir",
                format!("{} does not exist", resolved.display()),
                "build it with `cargo xtask bundle`, or remove the field to use the default cache",
            ));
        }
    }
}

/// A relative path inside the bundle (as in `bundle.json`): it is joined to
/// the base URL and to the local cache, so no `..`, no absolute path, no
/// character a shell or a URL would read differently.
fn is_bundle_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        })
}

/// Longest lifetimes accepted: ten years for leaves, a hundred for CAs.
/// Beyond that a date no longer fits a certificate (or time itself).
pub const MAX_LEAF_DAYS: u32 = 3650;
pub const MAX_CA_DAYS: u32 = 36500;

fn check_lifetimes(p: &mut Vec<Problem>, c: &CertificateLifetimes) {
    if c.ca_days == 0 || c.leaf_days == 0 {
        p.push(Problem::new(
            "spec.certificates",
            "lifetimes must be at least one day",
            "e.g. caDays: 3650, leafDays: 365",
        ));
    }
    if c.ca_days > MAX_CA_DAYS {
        p.push(Problem::new(
            "spec.certificates.caDays",
            format!("{} days is too long", c.ca_days),
            format!("use 1..={MAX_CA_DAYS} days, e.g. 3650"),
        ));
    }
    if c.leaf_days > MAX_LEAF_DAYS {
        p.push(Problem::new(
            "spec.certificates.leafDays",
            format!("{} days is too long", c.leaf_days),
            format!("use 1..={MAX_LEAF_DAYS} days, e.g. 365"),
        ));
    }
    if c.leaf_days > c.ca_days {
        p.push(Problem::new(
            "spec.certificates.leafDays",
            format!("{} days outlives the CAs ({} days)", c.leaf_days, c.ca_days),
            "leaf certificates cannot outlive the CA that signed them",
        ));
    }
}
