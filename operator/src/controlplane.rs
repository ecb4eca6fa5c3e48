//! The control plane's health as the `Cluster`'s `ControllersReady`
//! condition: every controller's apiserver is asked for `/readyz` (which
//! includes its etcd) at its own address, every [`INTERVAL`], so a
//! controller that is down shows in `kubectl get clusters` without anyone
//! running a command; and, with a control-plane endpoint, who answers
//! there as `EndpointReady` ([`crate::endpoint`]). (`kubeup status` goes
//! further over SSH: etcd's members, leader and lag. The operator has no
//! etcd credentials on purpose: a client certificate of the etcd CA reads
//! every Secret of the cluster straight from etcd.)

use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use kubeup_crds::Cluster;
use kubeup_crds::conditions::{Condition, ConditionStatus};

use crate::endpoint;
use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::join::cluster_ca;

pub const CONDITION: &str = "ControllersReady";
pub const INTERVAL: Duration = Duration::from_secs(15);

/// One controller's answer: its address and `Ok` or why not.
pub type Answer = (String, std::result::Result<(), String>);

/// The condition for these answers.
pub fn condition(answers: &[Answer]) -> Condition {
    let ready = answers.iter().filter(|(_, r)| r.is_ok()).count();
    let total = answers.len();
    let (status, reason, message) = if total == 0 {
        (
            ConditionStatus::Unknown,
            "NoControllers",
            "the Cluster lists no controller".to_string(),
        )
    } else if ready == total {
        (
            ConditionStatus::True,
            "AllReady",
            format!("{ready}/{total} apiservers ready"),
        )
    } else {
        let down: Vec<String> = answers
            .iter()
            .filter_map(|(a, r)| r.as_ref().err().map(|e| format!("{a}: {e}")))
            .collect();
        (
            ConditionStatus::False,
            if ready > total / 2 {
                "Degraded"
            } else {
                "NoMajority"
            },
            format!(
                "{ready}/{total} apiservers ready; not ready: {}",
                down.join("; ")
            ),
        )
    };
    Condition::now(CONDITION, status, reason, message)
}

/// `/readyz` of the apiserver at `address`, with the operator's own
/// in-cluster credentials and the cluster CA (the apiserver's certificate
/// names every controller's address).
async fn ask(address: &str) -> std::result::Result<(), String> {
    let mut config = kube::Config::incluster().map_err(|e| e.to_string())?;
    config.cluster_url = format!("https://{address}:6443")
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    config.read_timeout = Some(Duration::from_secs(3));
    config.connect_timeout = Some(Duration::from_secs(2));
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let request = http::Request::get("/readyz")
        .body(vec![])
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(body.trim().chars().take(200).collect()),
        Err(e) => Err(e.to_string().chars().take(200).collect()),
    }
}

/// Ask every controller of every Cluster once; write the condition.
pub async fn check(ctx: &Context) -> Result<()> {
    let clusters: Api<Cluster> = Api::all(ctx.client.clone());
    for c in clusters
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list Clusters"))?
    {
        let answers: Vec<Answer> = futures::future::join_all(
            c.spec
                .controllers
                .iter()
                .map(|h| async move { (h.address.clone(), ask(&h.address).await) }),
        )
        .await;
        crate::certexpiry::set_cluster_condition(&clusters, &c, condition(&answers)).await?;
        if let Some(endpoint) = &c.spec.control_plane_endpoint {
            let ca = cluster_ca(&ctx.client, &ctx.settings.namespace).await?;
            let tls = endpoint::client_config(&ca).map_err(|reason| Error::Certificate {
                name: "cluster CA".into(),
                reason,
            })?;
            let addresses: Vec<String> = c
                .spec
                .controllers
                .iter()
                .map(|h| h.address.clone())
                .collect();
            let seen = endpoint::look(endpoint, &addresses, tls).await;
            crate::certexpiry::set_cluster_condition(&clusters, &c, seen).await?;
        }
    }
    Ok(())
}

/// Check every [`INTERVAL`]; errors are logged and retried.
pub async fn run(ctx: std::sync::Arc<Context>) {
    loop {
        if let Err(e) = check(&ctx).await {
            tracing::warn!(error = %e, "failed to check the controllers");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(a: &str, ok: bool) -> Answer {
        (
            a.into(),
            if ok {
                Ok(())
            } else {
                Err("connection refused".into())
            },
        )
    }

    #[test]
    fn all_ready_counts_them() {
        let c = condition(&[answer("a", true), answer("b", true), answer("c", true)]);
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.message, "3/3 apiservers ready");
    }

    #[test]
    fn one_down_is_degraded_and_named() {
        let c = condition(&[answer("a", true), answer("b", false), answer("c", true)]);
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "Degraded")
        );
        assert!(c.message.contains("2/3") && c.message.contains("b: connection refused"));
        let c = condition(&[answer("a", false), answer("b", false), answer("c", true)]);
        assert_eq!(c.reason, "NoMajority");
    }
}
