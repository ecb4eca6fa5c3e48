//! Kubelet serving certificates: kubelets started with `serverTLSBootstrap`
//! ask for them through `kubernetes.io/kubelet-serving` CSRs, which nobody
//! approves by default. The operator approves one only for a Node it joined
//! and only when every requested name and IP belongs to that WorkerJoin's
//! host; anything else stays unapproved with an Event saying why.
//!
//! [`decide`] is pure (parsed request + the WorkerJoins the operator knows);
//! [`reconcile`] reads, decides, approves or reports.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::WorkerJoinPhase as Phase;
use rcgen::{DnType, DnValue, SanType};

use crate::error::{Error, Result};
use crate::runtime::context::Context;
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

/// Already approved, denied or failed: nothing to do.
fn decided(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| ["Approved", "Denied", "Failed"].contains(&c.type_.as_str()))
        })
}

/// State of the serving-CSR approver.
pub struct Approver {
    pub ctx: Arc<Context>,
    pub workerjoins: Store<WorkerJoin>,
    /// CSRs already reported (one Event per CSR and reason).
    reported: Mutex<HashSet<String>>,
}

impl Approver {
    pub fn new(ctx: Arc<Context>, workerjoins: Store<WorkerJoin>) -> Self {
        Self {
            ctx,
            workerjoins,
            reported: Mutex::default(),
        }
    }

    async fn report(
        &self,
        csr: &CertificateSigningRequest,
        reason: &str,
        note: String,
        owner: Option<&str>,
    ) {
        let key = format!("{}/{reason}", csr.name_any());
        if !self
            .reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key)
        {
            return;
        }
        tracing::warn!(csr = %csr.name_any(), reason, %note, "kubelet-serving CSR left unapproved");
        let note = format!("CertificateSigningRequest {}: {note}", csr.name_any());
        // On the WorkerJoin when the node is ours, else on the CSR itself.
        let wj = owner.and_then(|o| {
            let (ns, name) = o.split_once('/')?;
            self.workerjoins
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
        });
        let reference = match &wj {
            Some(w) => w.object_ref(&()),
            None => csr.object_ref(&()),
        };
        // Events hold at most 1 kB of note; cut on a character boundary.
        let note = kubeup_provision::text::truncate_chars(&note, 1000);
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "ApproveServingCertificate".into(),
            secondary: wj.as_ref().map(|_| csr.object_ref(&())),
        };
        if let Err(e) = self.ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason, "failed to publish an Event");
        }
    }
}

/// One kubelet-serving CSR: approve it, or leave it and say why.
pub async fn reconcile(csr: Arc<CertificateSigningRequest>, a: Arc<Approver>) -> Result<Action> {
    if csr.spec.signer_name != SERVING_SIGNER || decided(&csr) {
        return Ok(Action::await_change());
    }
    let name = csr.name_any();
    let req = match parse(&csr) {
        Ok(r) => r,
        Err(why) => {
            a.report(&csr, "UnparsableRequest", why, None).await;
            return Ok(Action::await_change());
        }
    };
    let joined = joined(&a.workerjoins.state());
    let cluster = crate::workerjoin::join::read_cluster(&a.ctx.client).await?;
    let facts = ClusterFacts::from_cluster(&cluster, a.ctx.settings.allow_loopback);
    let decision = match decide(&req, &joined) {
        Decision::Approve { owner } => match reserved_names(&req, &facts) {
            Some(message) => Decision::Leave {
                reason: "ReservedName",
                message,
                owner: Some(owner),
            },
            None => Decision::Approve { owner },
        },
        leave => leave,
    };
    match decision {
        Decision::Approve { owner } => {
            let mut approved = (*csr).clone();
            approved.status = Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    reason: Some("KubeupWorkerJoin".into()),
                    message: Some(format!(
                        "approved by kubeup-operator: node and names of WorkerJoin {owner}'s host"
                    )),
                    ..Default::default()
                }]),
                certificate: None,
            });
            let api: Api<CertificateSigningRequest> = Api::all(a.ctx.client.clone());
            api.replace_subresource("approval", &name, &PostParams::default(), &approved)
                .await
                .map_err(Error::kube(format!(
                    "approve CertificateSigningRequest {name}"
                )))?;
            tracing::info!(csr = %name, workerjoin = %owner, "kubelet-serving CSR approved");
            a.ctx.metrics.serving_csr("approved");
            Ok(Action::await_change())
        }
        Decision::Leave {
            reason,
            message,
            owner,
        } => {
            a.ctx.metrics.serving_csr(reason);
            a.report(&csr, reason, message, owner.as_deref()).await;
            // A node being joined may show up in a moment: look again.
            Ok(if reason == "NodeNotJoinedByKubeup" {
                Action::requeue(Duration::from_secs(30))
            } else {
                Action::await_change()
            })
        }
    }
}

fn error_policy(_: Arc<CertificateSigningRequest>, err: &Error, a: Arc<Approver>) -> Action {
    a.ctx.metrics.reconcile_error(&err.category());
    tracing::warn!(error = %err, "kubelet-serving CSR approval failed");
    Action::requeue(Duration::from_secs(10))
}

/// Watch kubelet-serving CSRs (only those) until shutdown.
pub async fn run(ctx: Arc<Context>, workerjoins: Store<WorkerJoin>) {
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.signerName={SERVING_SIGNER}"));
    let approver = Arc::new(Approver::new(ctx, workerjoins));
    Controller::new(api, cfg)
        .shutdown_on_signal()
        .run(reconcile, error_policy, approver)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "serving CSR reconcile error");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
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
}
