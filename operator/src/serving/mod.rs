//! Kubelet serving certificates: kubelets started with `serverTLSBootstrap`
//! ask for them through `kubernetes.io/kubelet-serving` CSRs, which nobody
//! approves by default. The operator approves one only for a Node it joined
//! and only when every requested name and IP belongs to that WorkerJoin's
//! host; anything else stays unapproved with an Event saying why.
//!
//! [`request`] is pure (parsed request + the WorkerJoins the operator
//! knows); [`reconcile`] reads, decides, approves or reports.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use kubeup_crds::WorkerJoin;

mod request;

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::specguard::ClusterFacts;

pub use request::{Decision, SERVING_SIGNER, decide, joined, parse, reserved_names};

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
        let related = wj.as_ref().map(|_| csr.object_ref(&()));
        self.ctx
            .publish(
                reference,
                related,
                true,
                reason,
                "ApproveServingCertificate",
                note,
            )
            .await;
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
    a.ctx.metrics.reconcile_error(err.category());
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
