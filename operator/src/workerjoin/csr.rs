//! Client certificates through the Kubernetes CSR API: the key pair is made
//! here, fresh for each join; the CA key never leaves kube-controller-manager;
//! the private key goes only to the host, never into the API.
//!
//! One file (~450 lines) on purpose: making the request, the check that
//! the CSR found is exactly the one asked for ([`mismatch`]), approving and
//! waiting are one trust decision, best read and reviewed together.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kubeup_provision::pki::LeafSpec;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use secrecy::SecretString;

use crate::runtime::watch;
use crate::workerjoin::decide::NODE_LABEL;

/// What can go wrong issuing a client certificate through the CSR API.
/// Secret-free: names and reasons only, never key material.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("certificate {name}: failed to build the CSR: {source}")]
    Build {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    /// The request could not be used: not ours, denied, deleted, not PEM.
    #[error("certificate {name}: {reason}")]
    Unusable { name: String, reason: String },
    /// It does not match what this join asked for: never approved.
    #[error("CertificateSigningRequest {name} is not approved: {reason}")]
    Refused { name: String, reason: String },
    #[error(
        "timed out after {secs}s waiting for CertificateSigningRequest {name} to be signed by {signer} (is kube-controller-manager running with --cluster-signing-*?)"
    )]
    Timeout {
        name: String,
        signer: String,
        secs: u64,
    },
    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl CsrError {
    /// Stable PascalCase reason for Events, conditions and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            CsrError::Build { .. } | CsrError::Unusable { .. } => "CertificateFailed",
            CsrError::Refused { .. } => "CsrRefused",
            CsrError::Timeout { .. } => "Timeout",
            CsrError::Kube { .. } => "KubeApiError",
        }
    }

    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> CsrError {
        let action = action.into();
        move |source| CsrError::Kube { action, source }
    }
}

type Result<T, E = CsrError> = std::result::Result<T, E>;

pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Annotation on a CSR naming the WorkerJoin (`ns/name`) and its uid: the
/// only CSRs the operator approves are those it made for a WorkerJoin.
pub const CSR_OWNER_ANNOTATION: &str = "kubeup.dev/workerjoin-uid";

/// One client certificate to obtain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// `kubelet`: part of the CSR name.
    pub component: &'static str,
    pub signer: &'static str,
    pub common_name: String,
    pub organizations: Vec<String>,
}

impl ClientCert {
    pub fn kubelet(node_name: &str) -> Self {
        Self {
            component: "kubelet",
            signer: KUBELET_SIGNER,
            common_name: format!("system:node:{node_name}"),
            organizations: vec!["system:nodes".into()],
        }
    }

    /// What a current certificate on the host must satisfy.
    pub fn leaf_spec(&self) -> LeafSpec {
        let orgs: Vec<&str> = self.organizations.iter().map(String::as_str).collect();
        LeafSpec::client(&self.common_name, &orgs, 365)
    }
}

/// A fresh key pair and the PEM CSR for it.
pub struct Generated {
    pub key_pem: SecretString,
    pub csr_pem: String,
    /// sha256 (hex) of the public key: recorded in status, and the only key
    /// a CSR approved for this join may carry.
    pub public_key_sha256: String,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generated")
            .field("key_pem", &"***")
            .field("csr_pem", &self.csr_pem)
            .field("public_key_sha256", &self.public_key_sha256)
            .finish()
    }
}

/// Generate a P-256 key pair and a CSR with the wanted subject.
pub fn generate(cert: &ClientCert) -> Result<Generated> {
    let err = |source: rcgen::Error| CsrError::Build {
        name: cert.common_name.clone(),
        source,
    };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in &cert.organizations {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, cert.common_name.as_str());
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok(Generated {
        key_pem: SecretString::from(key.serialize_pem()),
        csr_pem: csr.pem().map_err(err)?,
        public_key_sha256: key_sha256(&key),
    })
}

/// sha256 (hex) of a public key's bytes.
pub fn key_sha256(key: &impl rcgen::PublicKeyData) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.der_bytes()))
}

/// Who the apiserver authenticates this client as (a SelfSubjectReview:
/// what the apiserver puts in `spec.username` of the CSRs it creates).
pub async fn whoami(client: &kube::Client) -> Result<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(CsrError::kube(
            "ask the apiserver who the operator is (SelfSubjectReview)",
        ))?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| CsrError::Unusable {
            name: "kubelet client".into(),
            reason: "the apiserver did not say who the operator is".into(),
        })
}

/// What a kubelet client CSR must be, in every part the apiserver or the
/// signed request vouches for, before the operator approves it.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub cert: &'a ClientCert,
    /// The operator's own user name: CSRs made by anyone else are never
    /// approved, whatever their annotations say.
    pub username: &'a str,
    /// sha256 of the public key the operator made for this join.
    pub public_key_sha256: &'a str,
}

/// Why this CSR is not the one the operator made for this join, if it is
/// not: requester, signer, subject, usages and public key are checked.
pub fn mismatch(csr: &CertificateSigningRequest, want: &Expected<'_>) -> Option<String> {
    let spec = &csr.spec;
    let requester = spec.username.as_deref().unwrap_or("");
    if requester != want.username {
        return Some(format!(
            "requested by {requester:?}, not by the operator ({:?})",
            want.username
        ));
    }
    if spec.signer_name != want.cert.signer {
        return Some(format!(
            "signer {} is not {}",
            spec.signer_name, want.cert.signer
        ));
    }
    let mut usages = spec.usages.clone().unwrap_or_default();
    usages.sort();
    if usages != ["client auth", "digital signature"] {
        return Some(format!(
            "usages {usages:?} are not exactly [\"digital signature\", \"client auth\"]"
        ));
    }
    let parsed = match std::str::from_utf8(&spec.request.0)
        .ok()
        .and_then(|pem| rcgen::CertificateSigningRequestParams::from_pem(pem).ok())
    {
        Some(p) => p,
        None => return Some("the request is not a valid PKCS#10 request".into()),
    };
    let mut cn = None;
    let mut orgs = vec![];
    for (t, v) in parsed.params.distinguished_name.iter() {
        let text = match v {
            rcgen::DnValue::Utf8String(s) => s.clone(),
            rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
            other => format!("{other:?}"),
        };
        match t {
            DnType::CommonName => cn = Some(text),
            DnType::OrganizationName => orgs.push(text),
            _ => {}
        }
    }
    if cn.as_deref() != Some(want.cert.common_name.as_str()) || orgs != want.cert.organizations {
        return Some(format!(
            "subject CN={:?} O={orgs:?} is not CN={:?} O={:?}",
            cn.unwrap_or_default(),
            want.cert.common_name,
            want.cert.organizations
        ));
    }
    if !parsed.params.subject_alt_names.is_empty() {
        return Some("a kubelet client certificate carries no subject alternative names".into());
    }
    let got = key_sha256(&parsed.public_key);
    if got != want.public_key_sha256 {
        return Some(format!(
            "its public key (sha256 {got}) is not the one the operator made for this join ({})",
            want.public_key_sha256
        ));
    }
    None
}

/// The CSR object: labelled with the WorkerJoin, annotated with its uid.
pub fn csr_object(
    name: &str,
    cert: &ClientCert,
    csr_pem: &str,
    owner: &str,
    owner_uid: &str,
) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [(
                    NODE_LABEL.to_string(),
                    crate::workerjoin::decide::owner_label_value(owner),
                )]
                .into(),
            ),
            annotations: Some([(CSR_OWNER_ANNOTATION.to_string(), owner_uid.to_string())].into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.as_bytes().to_vec()),
            signer_name: cert.signer.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    }
}

/// A name unique per attempt: `kubeup-<component>-<node>-<8 hex>`.
pub fn csr_name(cert: &ClientCert, node_name: &str) -> String {
    let mut r = [0u8; 4];
    // Uniqueness only: a failed random source leaves zeros, and the
    // apiserver refuses a duplicate name (409) rather than reuse one.
    let _ = getrandom::fill(&mut r);
    let mut node: String = node_name.chars().take(200).collect();
    node.retain(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    format!("kubeup-{}-{node}-{}", cert.component, hex::encode(r))
}

/// Whether the operator may approve this CSR: it carries the annotation it
/// puts on the CSRs it creates, naming this WorkerJoin's uid.
pub fn is_ours(csr: &CertificateSigningRequest, owner_uid: &str) -> bool {
    csr.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CSR_OWNER_ANNOTATION))
        .is_some_and(|u| u == owner_uid)
}

/// Create the CSR, approve it (it is ours), wait for the certificate.
/// Returns (certificate PEM, private key PEM).
pub async fn issue(
    client: &kube::Client,
    cert: &ClientCert,
    node_name: &str,
    owner: &str,
    owner_uid: &str,
    timeout: Duration,
) -> Result<(String, SecretString)> {
    let generated = generate(cert)?;
    let username = whoami(client).await?;
    let name = csr_name(cert, node_name);
    create(client, &name, cert, &generated.csr_pem, owner, owner_uid).await?;
    let want = Expected {
        cert,
        username: &username,
        public_key_sha256: &generated.public_key_sha256,
    };
    let pem = approve_and_wait(client, &name, &want, owner, owner_uid, timeout).await?;
    Ok((pem, generated.key_pem))
}

/// Create the CSR object (not yet approved).
pub async fn create(
    client: &kube::Client,
    name: &str,
    cert: &ClientCert,
    csr_pem: &str,
    owner: &str,
    owner_uid: &str,
) -> Result<()> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let obj = csr_object(name, cert, csr_pem, owner, owner_uid);
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .map_err(CsrError::kube(format!(
            "create CertificateSigningRequest {name}"
        )))?;
    if !is_ours(&created, owner_uid) {
        return Err(CsrError::Unusable {
            name: name.into(),
            reason: "the created CSR does not carry the WorkerJoin's uid".into(),
        });
    }
    Ok(())
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Approve the CSR `name` (only if it carries this WorkerJoin's uid; a CSR
/// already approved is not approved again) and wait for its certificate.
pub async fn approve_and_wait(
    client: &kube::Client,
    name: &str,
    want: &Expected<'_>,
    owner: &str,
    owner_uid: &str,
    timeout: Duration,
) -> Result<String> {
    let signer = want.cert.signer;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut csr = api.get(name).await.map_err(CsrError::kube(format!(
        "get CertificateSigningRequest {name}"
    )))?;
    if !is_ours(&csr, owner_uid) {
        return Err(CsrError::Refused {
            name: name.into(),
            reason: format!("it does not carry WorkerJoin {owner}'s uid"),
        });
    }
    if let Some(reason) = mismatch(&csr, want) {
        return Err(CsrError::Refused {
            name: name.into(),
            reason,
        });
    }
    if !has_condition(&csr, "Approved") {
        let mut status = csr.status.take().unwrap_or_default();
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("KubeupWorkerJoin".into()),
                message: Some(format!(
                    "approved by kubeup-operator for WorkerJoin {owner}, which created it"
                )),
                ..Default::default()
            });
        csr.status = Some(status);
        api.replace_subresource("approval", name, &PostParams::default(), &csr)
            .await
            .map_err(CsrError::kube(format!(
                "approve CertificateSigningRequest {name}"
            )))?;
    }

    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = std::pin::pin!(watch::changes(api, name, deadline));
    while let Some(csr) = changes.next().await {
        let Some(csr) = csr else {
            return Err(CsrError::Unusable {
                name: name.into(),
                reason: "it was deleted before its certificate was issued".into(),
            });
        };
        let status = csr.status.unwrap_or_default();
        if let Some(bad) = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        {
            return Err(CsrError::Unusable {
                name: name.into(),
                reason: format!(
                    "{}: {} {}",
                    bad.type_,
                    bad.reason.unwrap_or_default(),
                    bad.message.unwrap_or_default()
                ),
            });
        }
        if let Some(pem) = status.certificate.filter(|c| !c.0.is_empty()) {
            return String::from_utf8(pem.0).map_err(|_| CsrError::Unusable {
                name: name.into(),
                reason: "the issued certificate is not PEM text".into(),
            });
        }
    }
    Err(CsrError::Timeout {
        name: name.into(),
        signer: signer.to_string(),
        secs: timeout.as_secs(),
    })
}

#[cfg(test)]
mod tests;
