//! Expiry of the controller's certificates: `kubeup up` publishes their
//! public parts in the ConfigMap `kubeup-certificates` (the same
//! certificates `kubeup certs check` reads, plus the controller's leaves);
//! the operator turns them into the `CertificatesValid` condition on every
//! `Cluster` and the `certificate_expiry_seconds` metric, rechecked
//! periodically so an approaching expiry shows without anyone running a
//! command.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use kubeup_crds::Cluster;
use kubeup_crds::conditions::{Condition, ConditionStatus};
use kubeup_provision::pki;

use crate::error::{Error, Result};
use crate::runtime::context::{Context, FIELD_MANAGER};

pub const CONFIGMAP: &str = "kubeup-certificates";
pub const CONDITION: &str = "CertificatesValid";
/// Days left below which the condition turns False (as `kubeup certs check`
/// warns by default).
pub const WARN_DAYS: i64 = 30;
/// How often the certificates are looked at again.
pub const INTERVAL: Duration = Duration::from_secs(600);

/// One certificate's expiry.
#[derive(Clone, Debug, PartialEq)]
pub struct Expiry {
    pub name: String,
    pub seconds_left: i64,
    pub not_after: String,
}

/// Read every `<name>.crt` entry; a damaged one is reported, not skipped.
pub fn expiries(data: &BTreeMap<String, String>) -> (Vec<Expiry>, Vec<String>) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut out = vec![];
    let mut damaged = vec![];
    for (key, pem) in data {
        let name = key.trim_end_matches(".crt").to_string();
        match pki::not_after_unix(pem) {
            Ok((ts, text)) => out.push(Expiry {
                name,
                seconds_left: ts - now,
                not_after: text,
            }),
            Err(e) => damaged.push(format!("{name}: {e}")),
        }
    }
    (out, damaged)
}

/// The condition for these expiries.
pub fn condition(expiries: &[Expiry], damaged: &[String], warn_days: i64) -> Condition {
    let day = 86_400;
    let expired: Vec<&Expiry> = expiries.iter().filter(|e| e.seconds_left <= 0).collect();
    let soon: Vec<&Expiry> = expiries
        .iter()
        .filter(|e| e.seconds_left > 0 && e.seconds_left < warn_days * day)
        .collect();
    let list = |v: &[&Expiry]| {
        v.iter()
            .map(|e| {
                format!(
                    "{} ({} day(s), {})",
                    e.name,
                    e.seconds_left / day,
                    e.not_after
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (status, reason, message) = if !expired.is_empty() {
        (
            ConditionStatus::False,
            "Expired",
            format!(
                "expired: {}; renew with `kubeup up` (it reissues certificates within 30 days of expiry)",
                list(&expired)
            ),
        )
    } else if !damaged.is_empty() {
        (
            ConditionStatus::False,
            "Unreadable",
            format!("unreadable: {}", damaged.join("; ")),
        )
    } else if !soon.is_empty() {
        (
            ConditionStatus::False,
            "ExpiringSoon",
            format!(
                "fewer than {warn_days} days left: {}; renew with `kubeup up`",
                list(&soon)
            ),
        )
    } else if let Some(first) = expiries.iter().min_by_key(|e| e.seconds_left) {
        (
            ConditionStatus::True,
            "Valid",
            format!(
                "{} certificates; the first to expire is {} in {} days",
                expiries.len(),
                first.name,
                first.seconds_left / day
            ),
        )
    } else {
        (
            ConditionStatus::Unknown,
            "NotPublished",
            "no certificates published yet (run `kubeup up`)".into(),
        )
    };
    Condition::now(CONDITION, status, reason, message)
}

/// Look once: metric and condition on every Cluster.
pub async fn check(ctx: &Context) -> Result<Condition> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let data = cms
        .get_opt(CONFIGMAP)
        .await
        .map_err(Error::kube(format!(
            "read ConfigMap {}/{CONFIGMAP}",
            ctx.settings.namespace
        )))?
        .and_then(|cm| cm.data)
        .unwrap_or_default();
    let (expiries, damaged) = expiries(&data);
    ctx.metrics.certificate_expiry.clear();
    for e in &expiries {
        ctx.metrics
            .certificate_expiry
            .get_or_create(&vec![("certificate".to_string(), e.name.clone())])
            .set(e.seconds_left);
    }
    let new = condition(&expiries, &damaged, WARN_DAYS);
    let clusters: Api<Cluster> = Api::all(ctx.client.clone());
    for c in clusters
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list Clusters"))?
    {
        set_cluster_condition(&clusters, &c, new.clone()).await?;
    }
    Ok(new)
}

/// Set one condition of a Cluster's status, leaving the others alone. Each
/// condition is applied by a field manager of its own, with only its own
/// entry (the list is keyed by type): one checker applying the whole list
/// as it last read it would drop a condition another one set meanwhile,
/// which server-side apply does for fields a manager stops sending.
pub async fn set_cluster_condition(
    clusters: &Api<Cluster>,
    c: &Cluster,
    condition: Condition,
) -> Result<()> {
    let type_ = condition.type_.clone();
    let mut conditions = c.status.clone().unwrap_or_default().conditions;
    // Keeps the transition time when the status did not change.
    kubeup_crds::conditions::set_condition(&mut conditions, condition);
    let mine: Vec<&Condition> = conditions.iter().filter(|x| x.type_ == type_).collect();
    let patch = serde_json::json!({
        "apiVersion": "kubeup.dev/v1alpha1",
        "kind": "Cluster",
        "status": {"conditions": mine},
    });
    clusters
        .patch_status(
            &c.name_any(),
            &PatchParams::apply(&format!("{FIELD_MANAGER}-{}", type_.to_lowercase())).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube(format!(
            "update the status of Cluster {}",
            c.name_any()
        )))?;
    Ok(())
}

/// Check now and every [`INTERVAL`]; errors are logged and retried.
pub async fn run(ctx: std::sync::Arc<Context>) {
    loop {
        // Soon again while nothing is known yet (`up` publishes the
        // certificates just after it starts the operator).
        let next = match check(&ctx).await {
            Ok(c) if c.status == ConditionStatus::True => {
                tracing::debug!(reason = %c.reason, message = %c.message, "certificates checked");
                INTERVAL
            }
            Ok(c) if c.status == ConditionStatus::Unknown => RETRY,
            Ok(c) => {
                tracing::warn!(reason = %c.reason, message = %c.message, "controller certificates need attention");
                INTERVAL
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to check the controller certificates");
                RETRY
            }
        };
        tokio::time::sleep(next).await;
    }
}

const RETRY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, days: i64) -> Expiry {
        Expiry {
            name: name.into(),
            seconds_left: days * 86_400,
            not_after: "x".into(),
        }
    }

    #[test]
    fn the_condition_names_what_expires() {
        let ok = condition(&[e("ca", 3000), e("apiserver", 300)], &[], 30);
        assert_eq!(ok.status, ConditionStatus::True);
        assert!(
            ok.message.contains("apiserver in 300 days"),
            "{}",
            ok.message
        );
        let soon = condition(&[e("ca", 3000), e("apiserver", 10)], &[], 30);
        assert_eq!(
            (soon.status, soon.reason.as_str()),
            (ConditionStatus::False, "ExpiringSoon")
        );
        assert!(
            soon.message.contains("apiserver (10 day(s)"),
            "{}",
            soon.message
        );
        assert!(!soon.message.contains("ca ("), "{}", soon.message);
        let gone = condition(&[e("etcd-ca", -1), e("apiserver", 10)], &[], 30);
        assert_eq!(gone.reason, "Expired");
        assert_eq!(condition(&[], &[], 30).status, ConditionStatus::Unknown);
        let bad = condition(&[e("ca", 3000)], &["x: not PEM".into()], 30);
        assert_eq!(bad.reason, "Unreadable");
    }
}
