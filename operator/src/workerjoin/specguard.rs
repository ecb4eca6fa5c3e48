//! What a WorkerJoin may ask for. Its author gets one power: "join this
//! machine as a worker". Every string it carries reaches a Node, a
//! certificate or a file on a host, so each is checked here against
//! Kubernetes' own syntax and against the cluster it would join (no
//! controller's address, nothing inside the service or pod network, no
//! name the apiserver answers to). Pure: the caller gathers the facts.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use kubeup_crds::validation::{
    MAX_LABELS, MAX_TAINTS, canonical_ipv4, dns1123_subdomain, label_value, looks_numeric,
    qualified_name, reserved_label, reserved_taint,
};
use kubeup_crds::{Cluster, WorkerJoinSpec};

/// What of the cluster a WorkerJoin's address and names are checked
/// against.
#[derive(Clone, Debug, Default)]
pub struct ClusterFacts {
    /// Controllers' addresses and names, lowercase.
    pub controllers: Vec<String>,
    pub service_cidr: Option<IpNet>,
    pub pod_cidr: Option<IpNet>,
    /// The cluster DNS domain (`cluster.local`).
    pub domain: String,
    /// Tests only: the harness's sshd listens on loopback.
    pub allow_loopback: bool,
}

impl ClusterFacts {
    pub fn from_cluster(c: &Cluster, allow_loopback: bool) -> Self {
        let mut controllers = vec![];
        for h in &c.spec.controllers {
            controllers.push(h.address.to_lowercase());
            if let Some(n) = &h.name {
                controllers.push(n.to_lowercase());
            }
        }
        // The endpoint is the apiservers' too: no worker may claim it.
        if let Some(e) = &c.spec.control_plane_endpoint {
            controllers.push(e.address.to_lowercase());
        }
        let net = &c.spec.networking;
        Self {
            controllers,
            service_cidr: net.service_cidr.parse().ok(),
            pod_cidr: net.pod_cidr.parse().ok(),
            domain: net.domain.to_lowercase(),
            allow_loopback,
        }
    }

    /// Names the apiserver's certificate carries: a node called so would
    /// get a serving certificate an apiserver client accepts.
    pub fn apiserver_names(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "localhost",
        ]
        .map(String::from)
        .to_vec();
        names.push(format!("kubernetes.default.svc.{}", self.domain));
        names.extend(self.controllers.iter().cloned());
        names
    }

    /// Why this IP may not be a worker's (or appear in its serving
    /// certificate), if it may not.
    pub fn forbidden_ip(&self, ip: IpAddr) -> Option<String> {
        let what = match ip {
            _ if ip.is_unspecified() => Some("unspecified"),
            IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST => Some("broadcast"),
            _ if ip.is_loopback() && !self.allow_loopback => Some("loopback"),
            _ if ip.is_multicast() => Some("multicast"),
            IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
            _ => None,
        };
        if let Some(w) = what {
            return Some(format!("{ip} is a {w} address"));
        }
        if self
            .controllers
            .iter()
            .any(|c| c.parse::<IpAddr>().ok() == Some(ip))
        {
            return Some(format!("{ip} is a controller's address"));
        }
        if let Some(net) = self.service_cidr.filter(|n| n.contains(&ip)) {
            return Some(format!("{ip} is inside the service network {net}"));
        }
        if let Some(net) = self.pod_cidr.filter(|n| n.contains(&ip)) {
            return Some(format!("{ip} is inside the pod network {net}"));
        }
        None
    }

    /// Why this DNS name may not name a worker, if it may not.
    pub fn forbidden_name(&self, name: &str) -> Option<String> {
        let lower = name.to_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") {
            return (!self.allow_loopback).then(|| format!("{name} is a loopback name"));
        }
        self.apiserver_names()
            .contains(&lower)
            .then(|| format!("{name} is a name of the apiserver or a controller"))
    }
}

/// Every problem of `spec`, each with its field path; empty when none.
pub fn problems(spec: &WorkerJoinSpec, facts: &ClusterFacts) -> Vec<String> {
    let mut out = vec![];
    if let Err(e) = address(&spec.address, facts) {
        out.push(format!("spec.address: {e}"));
    }
    if let Some(b) = &spec.bastion
        && let Err(e) = address(&b.address, facts)
    {
        out.push(format!("spec.bastion.address: {e}"));
    }
    if let Some(name) = &spec.node_name
        && let Err(e) = node_name(name, facts)
    {
        out.push(format!("spec.nodeName: {e}"));
    }
    if let Err(e) = ssh_user(&spec.user) {
        out.push(format!("spec.user: {e}"));
    }
    if let Err(e) = dns1123_subdomain(&spec.ssh_secret_ref.name) {
        out.push(format!("spec.sshSecretRef.name: {e}"));
    }
    out.extend(labels(spec));
    out.extend(taints(spec));
    out
}

/// A node name (from the spec or the host's hostname).
pub fn node_name(name: &str, facts: &ClusterFacts) -> Result<(), String> {
    dns1123_subdomain(name)?;
    match facts.forbidden_name(name) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// An SSH endpoint: a canonical IPv4 address that is no cluster-internal
/// or special one, or a DNS name.
pub fn address(addr: &str, facts: &ClusterFacts) -> Result<(), String> {
    if looks_numeric(addr) {
        let ip = canonical_ipv4(addr).ok_or_else(|| {
            format!(
                "{addr:?} is not a canonical IPv4 address (four numbers 0-255 without leading zeros)"
            )
        })?;
        return match facts.forbidden_ip(IpAddr::V4(ip)) {
            Some(why) => Err(why),
            None => Ok(()),
        };
    }
    dns1123_subdomain(&addr.to_lowercase())?;
    match facts.forbidden_name(addr) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// A login name as `useradd` takes it (it is passed to SSH only, but a
/// name with spaces or quotes is never a real account).
fn ssh_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{user:?} is not a user name (lowercase letters, digits, '_' and '-', at most 32)"
        ))
    }
}

fn labels(spec: &WorkerJoinSpec) -> Vec<String> {
    let mut out = vec![];
    if spec.labels.len() > MAX_LABELS {
        out.push(format!(
            "spec.labels: {} labels, at most {MAX_LABELS}",
            spec.labels.len()
        ));
    }
    for (k, v) in &spec.labels {
        let checks = [
            qualified_name(k).err(),
            label_value(v).err(),
            reserved_label(k),
        ];
        out.extend(
            checks
                .into_iter()
                .flatten()
                .map(|e| format!("spec.labels: {e}")),
        );
    }
    out
}

fn taints(spec: &WorkerJoinSpec) -> Vec<String> {
    let mut out = vec![];
    if spec.taints.len() > MAX_TAINTS {
        out.push(format!(
            "spec.taints: {} taints, at most {MAX_TAINTS}",
            spec.taints.len()
        ));
    }
    for (i, t) in spec.taints.iter().enumerate() {
        let checks = [
            qualified_name(&t.key).err(),
            t.value.as_deref().and_then(|v| label_value(v).err()),
            reserved_taint(&t.key),
        ];
        out.extend(
            checks
                .into_iter()
                .flatten()
                .map(|e| format!("spec.taints[{i}]: {e}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeup_crds::workerjoin::NodeTaint;

    fn facts() -> ClusterFacts {
        ClusterFacts {
            controllers: vec!["198.18.0.10".into(), "ctl-1".into()],
            service_cidr: "10.96.0.0/12".parse().ok(),
            pod_cidr: "10.244.0.0/16".parse().ok(),
            domain: "cluster.local".into(),
            allow_loopback: false,
        }
    }

    fn spec(address: &str) -> WorkerJoinSpec {
        WorkerJoinSpec {
            address: address.into(),
            ..crate::workerjoin::decide::tests::spec()
        }
    }

    #[test]
    fn a_plain_worker_passes() {
        assert_eq!(
            problems(&spec("198.18.0.11"), &facts()),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(&spec("w1.example.com"), &facts()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn addresses_that_are_not_a_worker_are_refused() {
        for (addr, why) in [
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.1", "multicast"),
            ("198.18.0.10", "controller"),
            ("10.96.0.1", "service network"),
            ("10.244.3.7", "pod network"),
            ("010.0.0.1", "canonical"),
            ("1.2.3.999", "canonical"),
            ("localhost", "loopback"),
            ("ctl-1", "controller"),
            ("kubernetes.default.svc.cluster.local", "apiserver"),
        ] {
            let p = problems(&spec(addr), &facts());
            assert!(p.iter().any(|m| m.contains(why)), "{addr}: {p:?}");
        }
        let mut f = facts();
        f.allow_loopback = true;
        assert!(problems(&spec("127.0.0.1"), &f).is_empty());
    }

    #[test]
    fn names_labels_and_taints_follow_kubernetes_syntax() {
        let mut s = spec("198.18.0.11");
        s.node_name = Some("kubernetes".into());
        s.user = "root; rm -rf /".into();
        s.labels
            .insert("node-role.kubernetes.io/control-plane".into(), "".into());
        s.labels
            .insert("kubeup.dev/workerjoin".into(), "other.wj".into());
        s.labels
            .insert("disk".into(), "ssd\nExecStart=/bin/sh".into());
        s.taints.push(NodeTaint {
            key: "x y".into(),
            value: Some("a=b".into()),
            ..Default::default()
        });
        let p = problems(&s, &facts()).join("\n");
        for want in [
            "spec.nodeName: kubernetes is a name of the apiserver",
            "spec.user",
            "node-role.kubernetes.io/control-plane",
            "kubeup.dev/workerjoin",
            "is not a label value",
            "spec.taints[0]: key \"x y\"",
            "spec.taints[0]: value \"a=b\"",
        ] {
            assert!(p.contains(want), "{want} missing from:\n{p}");
        }
        let mut many = spec("198.18.0.11");
        for i in 0..=MAX_LABELS {
            many.labels.insert(format!("l{i}"), "v".into());
        }
        assert!(
            problems(&many, &facts())
                .iter()
                .any(|m| m.contains("at most 64"))
        );
    }
}
