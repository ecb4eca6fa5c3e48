//! The credentials a worker gets, kept while current, else issued: the
//! kubelet's client certificate through the CSR API (resumable, the key
//! made on the host's behalf and never in the API) and the node
//! components' Node-bound ServiceAccount tokens. The join's Certificates
//! phase and the steady-state renewal ([`super::nodetoken::renew_if_due`])
//! both come here.

use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use kubeup_crds::Cluster;
use kubeup_provision::converge;
use kubeup_provision::hostplan::{HostFile, certs, layout};
use kubeup_provision::pki;
use kubeup_provision::ssh::{Command, Session, quote};
use secrecy::ExposeSecret;

use crate::error::{Error, Result};
use crate::workerjoin::csr::{self, ClientCert};
use crate::workerjoin::join::Join;
use crate::workerjoin::nodetoken::{self, BoundNode, Component};
use crate::workerjoin::{nodeclaim, specguard};

/// Days a certificate on the host must still be valid to be kept.
const CERT_MIN_DAYS: i64 = 7;

/// What [`Join::node_tokens`] did.
struct NodeTokens {
    issued: Vec<&'static str>,
    /// The earliest renewal time of the tokens, unix seconds.
    renew_at: i64,
}

impl Join<'_> {
    /// The kubelet's client certificate and the node components' tokens:
    /// kept while current, else issued (CSR API / TokenRequest API).
    /// Records when the tokens are due for renewal in status; returns what
    /// was issued. Also the steady-state renewal ([`nodetoken::renew_if_due`]).
    pub(crate) async fn certificates(
        &self,
        session: &Session,
        node_name: &str,
        ca_pem: &str,
    ) -> Result<Vec<&'static str>> {
        // The kubelet's certificate and the tokens need nothing of each
        // other: issued side by side (a join waits for the longer one).
        let (kubelet, tokens) = tokio::try_join!(
            self.kubelet_credential(session, node_name, ca_pem),
            self.node_tokens(session, node_name),
        )?;
        let mut issued: Vec<&'static str> = kubelet.into_iter().collect();
        issued.extend(tokens.issued);
        let renew_at = nodetoken::rfc3339(tokens.renew_at);
        self.with_status(|s| s.credentials_renew_at = renew_at)
            .await;
        Ok(issued)
    }

    /// The kubelet's client certificate, kept while current, else issued
    /// through the CSR API; its component name when issued.
    async fn kubelet_credential(
        &self,
        session: &Session,
        node_name: &str,
        ca_pem: &str,
    ) -> Result<Option<&'static str>> {
        let kubelet = ClientCert::kubelet(node_name);
        // Where the kubelet's client certificate lives (the lifetime in the
        // plan does not matter for reading it).
        let on_host = certs::kubelet_client(node_name, 365);
        let current = converge::remote_certs(session, std::slice::from_ref(&on_host)).await?;
        let mut issued = None;
        let fresh = current
            .first()
            .and_then(|c| c.as_deref())
            .map(|p| pki::is_current(p, ca_pem, &kubelet.leaf_spec(), CERT_MIN_DAYS));
        if !matches!(fresh, Some(Ok(()))) {
            tracing::info!(cert = kubelet.component, why = ?fresh.map(|r| r.err()), "issuing through the CSR API");
            self.kubelet_client_cert(session, &kubelet, node_name, ca_pem)
                .await?;
            issued = Some(kubelet.component);
        }
        // The CSR is done with: saved with the join's next status (a
        // resume before that finds the certificate current and issues none).
        self.with_status(|s| {
            s.pending_csr_key_sha256 = None;
            s.pending_csr = None;
        })
        .await;
        Ok(issued)
    }

    /// Each node component's token bound to this WorkerJoin's Node (made
    /// here when the kubelet has not registered it yet: a token needs the
    /// Node's uid): kept while current, else requested and written.
    async fn node_tokens(&self, session: &Session, node_name: &str) -> Result<NodeTokens> {
        let cni = self.cluster.spec.networking.cni;
        let node = BoundNode::of(&self.own_node(node_name).await?)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let components = nodetoken::components(cni);
        let each = components.iter().map(|component| async {
            Ok::<_, Error>(
                match self.kept_token(session, component, &node, now).await? {
                    Some(at) => (None, at),
                    None => (
                        Some(component.name),
                        self.new_token(session, component, &node).await?,
                    ),
                },
            )
        });
        let mut out = NodeTokens {
            issued: vec![],
            renew_at: i64::MAX,
        };
        for (issued, renew_at) in futures::future::try_join_all(each).await? {
            out.issued.extend(issued);
            out.renew_at = out.renew_at.min(renew_at);
        }
        Ok(out)
    }

    /// When the token on the host is due for renewal, `None` when it must
    /// be replaced now.
    async fn kept_token(
        &self,
        session: &Session,
        component: &Component,
        node: &BoundNode,
        now: i64,
    ) -> Result<Option<i64>> {
        let payload = remote_token_payload(session, component.path).await?;
        match nodetoken::is_current(&payload, component, node, now) {
            Ok(at) => Ok(Some(at)),
            Err(why) => {
                tracing::info!(
                    credential = component.name,
                    why,
                    "requesting a ServiceAccount token"
                );
                Ok(None)
            }
        }
    }

    /// A fresh token on the host; when it is due for renewal. client-go
    /// re-reads a kubeconfig's token file, so no restart is needed.
    async fn new_token(
        &self,
        session: &Session,
        component: &Component,
        node: &BoundNode,
    ) -> Result<i64> {
        let fresh = nodetoken::request(&self.ctx.client, component, node).await?;
        let token = fresh.token.expose_secret().as_bytes().to_vec();
        write(session, token, component.path, 0o600).await?;
        Ok(fresh.renew_at)
    }

    /// This WorkerJoin's Node, created as the kubelet would register it when
    /// it is not there yet; refused when it is recorded as another's.
    async fn own_node(&self, node_name: &str) -> Result<Node> {
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        let read = |e| Error::kube(format!("read Node {node_name}"))(e);
        let node = match nodes.get_opt(node_name).await.map_err(read)? {
            Some(n) => n,
            None => match nodes
                .create(
                    &PostParams::default(),
                    &super::node::new_node(node_name, &self.owner),
                )
                .await
            {
                Ok(n) => n,
                // Someone was faster: whose it is is checked below.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    nodes.get(node_name).await.map_err(read)?
                }
                Err(e) => return Err(Error::kube(format!("create Node {node_name}"))(e)),
            },
        };
        if nodeclaim::recorded_owner(&node) != Some(self.owner.as_str()) {
            return Err(Error::NodeNameTaken(format!(
                "Node {node_name} is not recorded as WorkerJoin {}'s; no token is bound to it",
                self.owner
            )));
        }
        Ok(node)
    }

    /// The kubelet's client certificate through the CSR API, resumable:
    /// the key is generated here and written to the host first, the CSR's
    /// name is recorded in status before it is approved, and the key and
    /// certificate are combined on the host. An operator that dies at any
    /// point resumes the recorded CSR (its key is still on the host), so at
    /// most one CSR per join is ever approved; a CSR created but not yet
    /// recorded stays unapproved (kube-controller-manager removes it).
    async fn kubelet_client_cert(
        &self,
        session: &Session,
        kubelet: &ClientCert,
        node_name: &str,
        ca_pem: &str,
    ) -> Result<()> {
        let uid = self.wj.uid().unwrap_or_default();
        // Only a CSR whose key fingerprint was recorded with it resumes; an
        // older status without one starts afresh.
        let recorded = self
            .with_status(|s| (s.pending_csr.clone(), s.pending_csr_key_sha256.clone()))
            .await;
        let resumable = match recorded {
            (Some(name), Some(key)) if remote_exists(session, &pending_key(&name)).await? => {
                Some((name, key))
            }
            _ => None,
        };
        let (name, key_sha256) = match resumable {
            Some(pending) => {
                tracing::info!(csr = %pending.0, "resuming the CSR of an earlier attempt");
                pending
            }
            None => {
                let generated = csr::generate(kubelet)?;
                let name = csr::csr_name(kubelet, node_name);
                // (Keys of attempts that never got as far as a recorded CSR
                // go when a certificate is put together below.)
                write(
                    session,
                    generated.key_pem.expose_secret().as_bytes().to_vec(),
                    &pending_key(&name),
                    0o600,
                )
                .await?;
                csr::create(
                    &self.ctx.client,
                    &name,
                    kubelet,
                    &generated.csr_pem,
                    &self.owner,
                    &uid,
                )
                .await?;
                let key = generated.public_key_sha256.clone();
                self.with_status(|s| {
                    s.pending_csr = Some(name.clone());
                    s.pending_csr_key_sha256 = Some(key);
                })
                .await;
                self.save().await?;
                (name, generated.public_key_sha256)
            }
        };
        let username = self.ctx.username().await?;
        let want = csr::Expected {
            cert: kubelet,
            username: &username,
            public_key_sha256: &key_sha256,
        };
        let signed = csr::approve_and_wait(
            &self.ctx.client,
            &name,
            &want,
            &self.owner,
            &uid,
            self.ctx.settings.csr_timeout,
        )
        .await;
        let cert_pem = match signed {
            Ok(pem) => pem,
            Err(e @ csr::CsrError::Refused { .. }) => {
                // Never this one again: the next attempt makes a new key
                // and CSR.
                self.with_status(|s| {
                    s.pending_csr = None;
                    s.pending_csr_key_sha256 = None;
                })
                .await;
                self.save().await?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        pki::is_current(&cert_pem, ca_pem, &kubelet.leaf_spec(), 0).map_err(|reason| {
            Error::Certificate {
                name: kubelet.common_name.clone(),
                reason: format!("the signed certificate is not usable: {reason}"),
            }
        })?;
        let q = |p: &str| quote(p).map_err(Error::ssh(session.host()));
        let (key, pem) = (q(&pending_key(&name))?, q(layout::KUBELET_CLIENT_PEM)?);
        // Certificate (on stdin) and key meet on the host only; the rename
        // is atomic. Then this key and those of attempts that never got as
        // far as a recorded CSR go. One round trip.
        let combine = format!(
            "set -e; umask 077; t=$(mktemp {pem}.XXXXXX); trap 'rm -f \"$t\"' EXIT; \
             cat - {key} > \"$t\"; chmod 600 \"$t\"; mv -f \"$t\" {pem}; trap - EXIT; \
             rm -f {}/kubeup-pending-*",
            layout::KUBELET_PKI_DIR
        );
        session
            .run(&Command::shell(combine).stdin(cert_pem).privileged())
            .await
            .map_err(Error::ssh(session.host()))?;
        Ok(())
    }

    /// Refuse a node name that is not valid, names the apiserver, or is
    /// another's (a Node or an earlier WorkerJoin): before it is recorded,
    /// and before any certificate for it.
    pub(crate) async fn claim_node_name(&self, name: &str, cluster: &Cluster) -> Result<()> {
        let facts =
            specguard::ClusterFacts::from_cluster(cluster, self.ctx.settings.allow_loopback);
        specguard::node_name(name, &facts).map_err(|why| {
            // The spec's name is checked again on every reconcile (a
            // refusal that lifts when the Cluster changes); the host's
            // name is seen only here, so that failure waits for a change.
            if self.wj.spec.node_name.is_some() {
                Error::InvalidSpec(format!("spec.nodeName: {why}"))
            } else {
                Error::InvalidHostName(format!(
                    "the host's hostname {name:?} cannot name a Node: {why}; set spec.nodeName"
                ))
            }
        })?;
        nodeclaim::ensure(self.ctx, self.wj, name).await
    }
}

/// `data` at `path` on the host, root's, with `mode`: one round trip.
async fn write(session: &Session, data: Vec<u8>, path: &str, mode: u32) -> Result<()> {
    let file = HostFile::new(path, data, mode, &[]);
    converge::write_batch(session, &[&file]).await?;
    Ok(())
}

/// Certificate parts of `(cert, key)` files on the host (only when the key
/// is there too), one round trip; never reads a key back.
/// Where the key of the pending CSR `name` waits on the host.
fn pending_key(csr_name: &str) -> String {
    format!("{}/kubeup-pending-{csr_name}.key", layout::KUBELET_PKI_DIR)
}

/// A privileged shell script on the host; its stdout.
async fn shell(session: &Session, script: &str) -> Result<String> {
    let out = session
        .run(&Command::shell(script).privileged())
        .await
        .map_err(Error::ssh(session.host()))?;
    Ok(out.stdout_str())
}

pub(crate) async fn run(session: &Session, script: &str) -> Result<()> {
    shell(session, script).await.map(|_| ())
}

async fn remote_exists(session: &Session, path: &str) -> Result<bool> {
    let q = quote(path).map_err(Error::ssh(session.host()))?;
    Ok(shell(session, &format!("[ -s {q} ] && echo yes; true"))
        .await?
        .trim()
        == "yes")
}

/// The payload (middle part) of the JWT in `path` on the host, or "" when
/// there is none. Only that part is read: the stdout of a command may be
/// logged, and the payload without its signature is no credential.
async fn remote_token_payload(session: &Session, path: &str) -> Result<String> {
    let q = quote(path).map_err(Error::ssh(session.host()))?;
    let out = shell(session, &format!("[ -s {q} ] && cut -d. -f2 {q}; true")).await?;
    Ok(out.trim().to_string())
}
