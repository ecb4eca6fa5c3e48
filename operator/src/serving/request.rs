//! The pure part of the approver: what a kubelet-serving CSR asks for, and
//! whether the node that asks may have it (every name and IP its own host's,
//! none an apiserver's, a controller's or a cluster network's).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::ResourceExt;
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::WorkerJoinPhase as Phase;
use rcgen::{DnType, DnValue, SanType};

use crate::workerjoin::specguard::ClusterFacts;

pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// Usages a kubelet serving certificate may ask for.
const ALLOWED_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

/// A node the operator joined, as far as its serving certificate goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// `ns/name` of the WorkerJoin.
    pub owner: String,
    pub node_name: String,
    /// `spec.address`: an IP, or a DNS name.
    pub address: String,
}

/// What a kubelet-serving CSR asks for (parsed from its PKCS#10 request and
/// its spec).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServingRequest {
    /// `spec.username`: who created it (set by the apiserver, unforgeable).
    pub username: String,
    pub signer: String,
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// SANs of other kinds (email, URI, …): never allowed.
    pub other_sans: Vec<String>,
    pub usages: Vec<String>,
}

/// What to do with a kubelet-serving CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve: it is for `owner`'s Node and names only its host.
    Approve { owner: String },
    /// Leave unapproved and say why (`owner` when the node is one of ours).
    Leave {
        reason: &'static str,
        message: String,
        owner: Option<String>,
    },
}

/// Parse a CSR object: its PKCS#10 request (signature checked) and spec.
pub fn parse(csr: &CertificateSigningRequest) -> std::result::Result<ServingRequest, String> {
    let pem = std::str::from_utf8(&csr.spec.request.0)
        .map_err(|_| "the request is not PEM text".to_string())?;
    let params = rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| format!("the request cannot be parsed: {e}"))?
        .params;
    let text = |v: &DnValue| match v {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    };
    let mut req = ServingRequest {
        username: csr.spec.username.clone().unwrap_or_default(),
        signer: csr.spec.signer_name.clone(),
        usages: csr.spec.usages.clone().unwrap_or_default(),
        ..Default::default()
    };
    for (t, v) in params.distinguished_name.iter() {
        match t {
            DnType::CommonName => req.common_name = Some(text(v)),
            DnType::OrganizationName => req.organizations.push(text(v)),
            _ => {}
        }
    }
    for san in &params.subject_alt_names {
        match san {
            SanType::DnsName(n) => req.dns_names.push(n.as_str().to_string()),
            SanType::IpAddress(ip) => req.ips.push(*ip),
            other => req.other_sans.push(format!("{other:?}")),
        }
    }
    Ok(req)
}

/// Approve only a request from `system:node:<name>` for a Node one of
/// `joined` names, with CN `system:node:<name>`, O `system:nodes`, serving
/// usages, and every DNS name / IP belonging to that WorkerJoin's host (its
/// node name and address).
pub fn decide(req: &ServingRequest, joined: &[Joined]) -> Decision {
    let leave = |reason, message: String, owner: Option<&Joined>| Decision::Leave {
        reason,
        message,
        owner: owner.map(|j| j.owner.clone()),
    };
    if req.signer != SERVING_SIGNER {
        return leave(
            "NotKubeletServing",
            format!("signer {} is not {SERVING_SIGNER}", req.signer),
            None,
        );
    }
    let Some(node) = req.username.strip_prefix("system:node:") else {
        return leave(
            "NotANode",
            format!(
                "requested by {:?}, not by a node (system:node:<name>)",
                req.username
            ),
            None,
        );
    };
    let Some(j) = joined.iter().find(|j| j.node_name == node) else {
        return leave(
            "NodeNotJoinedByKubeup",
            format!(
                "node {node} was not joined by a WorkerJoin; approve it yourself if you trust it"
            ),
            None,
        );
    };
    let want_cn = format!("system:node:{node}");
    if req.common_name.as_deref() != Some(want_cn.as_str()) {
        return leave(
            "WrongSubject",
            format!(
                "common name {:?} is not {want_cn:?}",
                req.common_name.as_deref().unwrap_or("")
            ),
            Some(j),
        );
    }
    if req.organizations != ["system:nodes"] {
        return leave(
            "WrongSubject",
            format!(
                "organizations {:?} are not [\"system:nodes\"]",
                req.organizations
            ),
            Some(j),
        );
    }
    if let Some(u) = req
        .usages
        .iter()
        .find(|u| !ALLOWED_USAGES.contains(&u.as_str()))
    {
        return leave(
            "WrongUsages",
            format!("usage {u:?} is not one of {ALLOWED_USAGES:?}"),
            Some(j),
        );
    }
    if !req.usages.iter().any(|u| u == "server auth") {
        return leave("WrongUsages", "usages lack \"server auth\"".into(), Some(j));
    }
    if !req.other_sans.is_empty() {
        return leave(
            "ForeignName",
            format!(
                "subject alternative names of other kinds are never approved: {:?}",
                req.other_sans
            ),
            Some(j),
        );
    }
    if req.dns_names.is_empty() && req.ips.is_empty() {
        return leave(
            "NoNames",
            "the request names no DNS name or IP".into(),
            Some(j),
        );
    }
    let address_ip: Option<IpAddr> = j.address.parse().ok();
    let mut own_names: BTreeSet<String> = BTreeSet::from([j.node_name.to_lowercase()]);
    if address_ip.is_none() {
        own_names.insert(j.address.to_lowercase());
    }
    let foreign_dns: Vec<&String> = req
        .dns_names
        .iter()
        .filter(|n| !own_names.contains(&n.to_lowercase()))
        .collect();
    let foreign_ips: Vec<&IpAddr> = req
        .ips
        .iter()
        .filter(|ip| Some(**ip) != address_ip)
        .collect();
    if !foreign_dns.is_empty() || !foreign_ips.is_empty() {
        let mut names: Vec<String> = foreign_dns.iter().map(|s| s.to_string()).collect();
        names.extend(foreign_ips.iter().map(|i| i.to_string()));
        return leave(
            "ForeignName",
            format!(
                "{} not of WorkerJoin {}'s host (node {}, address {}): not approved",
                names.join(", "),
                j.owner,
                j.node_name,
                j.address
            ),
            Some(j),
        );
    }
    Decision::Approve {
        owner: j.owner.clone(),
    }
}

/// Why a serving certificate with these names would be more than a
/// kubelet's, if it would: an apiserver name or address, a controller's,
/// the service or pod network, loopback, link-local, unspecified. Checked
/// on top of [`decide`]: the WorkerJoin's own address or node name could
/// otherwise carry such a name into a certificate the cluster CA signs.
pub fn reserved_names(req: &ServingRequest, facts: &ClusterFacts) -> Option<String> {
    let mut why: Vec<String> = req
        .ips
        .iter()
        .filter_map(|ip| facts.forbidden_ip(*ip))
        .collect();
    why.extend(req.dns_names.iter().filter_map(|n| facts.forbidden_name(n)));
    (!why.is_empty()).then(|| format!("never approved: {}", why.join("; ")))
}

/// The nodes the operator joined: WorkerJoins past their certificates (the
/// kubelet is being started or runs), not being deleted.
pub fn joined(wjs: &[Arc<WorkerJoin>]) -> Vec<Joined> {
    wjs.iter()
        .filter(|w| w.metadata.deletion_timestamp.is_none() && !w.spec.dry_run)
        .filter_map(|w| {
            let st = w.status.as_ref()?;
            let started = matches!(
                st.phase,
                Phase::Starting | Phase::WaitingForNode | Phase::Ready
            );
            let node = w.spec.node_name.clone().or_else(|| st.node_name.clone())?;
            started.then(|| Joined {
                owner: format!("{}/{}", w.namespace().unwrap_or_default(), w.name_any()),
                node_name: node,
                address: w.spec.address.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
