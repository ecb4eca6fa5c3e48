//! The node components' credentials on a worker (kube-proxy, flanneld):
//! tokens of their ServiceAccounts from the TokenRequest API, bound to the
//! worker's Node, short-lived, renewed by the operator, never stored in the
//! API. Only a token's payload is ever read back from the host, never its
//! signature: the payload alone is no credential.
//!
//! Why not client certificates like the kubelet's: the only signer for them
//! is `kubernetes.io/kube-apiserver-client`, and an operator allowed to
//! approve for that signer could mint any identity, `system:masters`
//! included.
//!
//! Why bound to the Node: the apiserver rejects the token once that Node
//! (name and uid) is gone, so deleting a Node revokes its components'
//! credentials. Why short-lived: a token copied off a host is worth a day
//! at most, and a renewal that stops shows within hours, not after a year.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use kubeup_crds::cluster::Cni;
use kubeup_provision::hostplan::{network, worker};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};

/// What can go wrong issuing a Node-bound token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("certificate Node {node}: the Node has no uid to bind tokens to")]
    Unbound { node: String },
    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// The TokenRequest answered with something that is no usable token.
    #[error("certificate {subject}: {reason}")]
    Unusable { subject: String, reason: String },
}

impl TokenError {
    /// Stable PascalCase reason for Events, conditions and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            TokenError::Kube { .. } => "KubeApiError",
            TokenError::Unbound { .. } | TokenError::Unusable { .. } => "CertificateFailed",
        }
    }
}
use crate::workerjoin::join::Join;
use kubeup_crds::workerjoin::WorkerJoinStatus;

/// Lifetime asked for. Renewed at half of it, so a day of operator or
/// SSH trouble still leaves the node working.
pub const LIFETIME_SECS: i64 = 24 * 3600;

/// How soon a failed steady-state renewal is tried again.
pub const RENEW_RETRY: Duration = Duration::from_secs(120);

/// A node component that runs on a ServiceAccount token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Component {
    /// For logs and the "issued" list.
    pub name: &'static str,
    /// Namespace and name of its ServiceAccount.
    pub service_account: (&'static str, &'static str),
    /// The token file on the host (its kubeconfig's `tokenFile`).
    pub path: &'static str,
}

pub const KUBE_PROXY: Component = Component {
    name: "kube-proxy",
    service_account: worker::KUBE_PROXY_SERVICE_ACCOUNT,
    path: worker::KUBE_PROXY_TOKEN,
};

pub const FLANNEL: Component = Component {
    name: "flannel",
    service_account: network::FLANNEL_SERVICE_ACCOUNT,
    path: network::FLANNEL_TOKEN,
};

/// The components that need a token on a worker of a cluster with this
/// pod network.
pub fn components(cni: Cni) -> Vec<Component> {
    let mut out = vec![KUBE_PROXY];
    if network::runs_flannel(cni) {
        out.push(FLANNEL);
    }
    out
}

impl Component {
    /// The subject every token of this component carries.
    pub fn subject(&self) -> String {
        let (ns, name) = self.service_account;
        format!("system:serviceaccount:{ns}:{name}")
    }
}

/// The Node a token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundNode {
    pub name: String,
    pub uid: String,
}

impl BoundNode {
    /// A Node read from the API (so it has a uid).
    pub fn of(node: &Node) -> Result<Self, TokenError> {
        let name = node.name_any();
        let uid = node
            .uid()
            .ok_or_else(|| TokenError::Unbound { node: name.clone() })?;
        Ok(Self { name, uid })
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(rename = "kubernetes.io", default)]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    #[serde(default)]
    node: Option<ObjectClaim>,
}

#[derive(Deserialize)]
struct ObjectClaim {
    name: String,
    #[serde(default)]
    uid: String,
}

fn claims(payload_b64: &str) -> std::result::Result<Claims, String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload_b64.trim().trim_end_matches('='))
        .map_err(|_| "the token file is not a JWT".to_string())?;
    serde_json::from_slice(&raw).map_err(|_| "the token has no sub/exp claims".to_string())
}

/// Halfway through the token's life (as issued: the apiserver may shorten
/// what was asked for).
fn renew_time(c: &Claims) -> i64 {
    let issued = c.iat.unwrap_or(c.exp - LIFETIME_SECS);
    issued + (c.exp - issued) / 2
}

/// Whether the JWT payload found on the host (the middle, base64url part
/// only) is `component`'s, bound to `node` (name and uid), and not yet
/// halfway through its life at `now_unix`. `Ok` is when it is due for
/// renewal (unix seconds); `Err` says why it must be replaced now.
pub fn is_current(
    payload_b64: &str,
    component: &Component,
    node: &BoundNode,
    now_unix: i64,
) -> std::result::Result<i64, String> {
    let c = claims(payload_b64)?;
    if c.sub != component.subject() {
        return Err(format!(
            "the token is for {:?}, not {}",
            c.sub,
            component.subject()
        ));
    }
    let bound = c.kubernetes.as_ref().and_then(|k| k.node.as_ref());
    match bound {
        None => return Err("the token is not bound to a Node".into()),
        Some(b) if b.name != node.name => {
            return Err(format!(
                "the token is bound to Node {:?}, not {}",
                b.name, node.name
            ));
        }
        Some(b) if b.uid != node.uid => {
            return Err(format!(
                "the token is bound to an earlier Node {} (uid {}), since deleted",
                node.name, b.uid
            ));
        }
        Some(_) => {}
    }
    let renew_at = renew_time(&c);
    if now_unix >= renew_at {
        let left = c.exp - now_unix;
        return Err(if left <= 0 {
            "the token has expired".to_string()
        } else {
            format!("the token expires in {} minute(s)", left / 60)
        });
    }
    Ok(renew_at)
}

/// A token fresh from the TokenRequest API and when to renew it.
pub struct Issued {
    pub token: SecretString,
    /// Unix seconds.
    pub renew_at: i64,
}

/// A fresh token for `component`, bound to `node`.
pub async fn request(
    client: &kube::Client,
    component: &Component,
    node: &BoundNode,
) -> Result<Issued, TokenError> {
    let (ns, name) = component.service_account;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(LIFETIME_SECS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.name.clone()),
                uid: Some(node.uid.clone()),
            }),
        },
        ..Default::default()
    };
    let out = api
        .create_token_request(name, &PostParams::default(), &req)
        .await
        .map_err(|source| TokenError::Kube {
            action: format!(
                "request a token for ServiceAccount {ns}/{name} bound to Node {} (is it there, and may the operator create serviceaccounts/token for it?)",
                node.name
            ),
            source,
        })?;
    let token = SecretString::from(out.status.map(|s| s.token).unwrap_or_default());
    let unusable = |reason: String| TokenError::Unusable {
        subject: component.subject(),
        reason,
    };
    let payload = token
        .expose_secret()
        .split('.')
        .nth(1)
        .ok_or_else(|| unusable("the TokenRequest returned no JWT".into()))?;
    let renew_at = claims(payload).map(|c| renew_time(&c)).map_err(unusable)?;
    Ok(Issued { token, renew_at })
}

/// Unix seconds as RFC 3339 (status).
pub fn rfc3339(unix: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// Steady state (a joined, Ready node): the tokens are renewed, and the
/// kubelet's client certificate looked at, once `status.credentialsRenewAt`
/// has passed or when it is missing; until then this is how long is left
/// (no SSH on every resync).
pub fn renewal_due_in(status: &WorkerJoinStatus) -> Option<Duration> {
    time_left(
        status.credentials_renew_at.as_deref(),
        OffsetDateTime::now_utc(),
    )
}

/// Time until the recorded renewal time, `None` when it has passed or is
/// missing or unreadable (then: renew now).
fn time_left(renew_at: Option<&str>, now: OffsetDateTime) -> Option<Duration> {
    let at = OffsetDateTime::parse(renew_at?, &Rfc3339).ok()?;
    let left = at - now;
    (left.is_positive()).then(|| Duration::from_secs(left.whole_seconds().unsigned_abs()))
}

/// Connect and run the join's credential step: tokens renewed when due,
/// the kubelet's client certificate re-issued only if its own rotation
/// failed (then the kubelet restarts to load it).
pub async fn renew(join: &Join<'_>) -> Result<()> {
    let recorded = join.with_status(|s| s.node_name.clone()).await;
    let node_name = recorded
        .ok_or_else(|| Error::Internal("a joined WorkerJoin without status.nodeName".into()))?;
    let ctx = join.ctx;
    let conn = crate::workerjoin::access::connect(
        &ctx.client,
        &join.namespace(),
        join.wj,
        &ctx.settings.ssh,
        &ctx.settings.namespace,
    )
    .await?;
    let session = conn.session;
    let result = async {
        let ca_pem =
            crate::workerjoin::join::cluster_ca(&ctx.client, &ctx.settings.namespace).await?;
        let issued = join.certificates(&session, &node_name, &ca_pem).await?;
        if issued.contains(&"kubelet") {
            let restart = [kubeup_provision::hostplan::Unit::Kubelet];
            kubeup_provision::converge::ensure_units(
                &session,
                &restart,
                &restart.into_iter().collect(),
                false,
                false,
            )
            .await?;
        }
        if !issued.is_empty() {
            tracing::info!(issued = ?issued, "node credentials renewed");
        }
        crate::workerjoin::upgrade::bring_current(join, &session, &node_name).await
    }
    .await;
    session.close().await;
    result
}

#[cfg(test)]
mod tests;
