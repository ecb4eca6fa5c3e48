//! Leader election through a `coordination.k8s.io` Lease: one replica
//! reconciles, the others wait; a leader that cannot renew in time exits so
//! that it never runs beside a new leader.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::error::{Error, Result};

pub const LEASE_NAME: &str = "kubeup-operator";

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// Whether a Lease held by someone else has expired at `now`.
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renew) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renew.0.as_second() + secs < now.as_second()
}

fn spec_for(s: &LeaseSettings, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(s.duration.as_secs() as i32),
        acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Try once: `Ok(true)` when we hold the lease afterwards.
pub async fn try_acquire(client: &kube::Client, s: &LeaseSettings) -> Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let err = |what: &str| Error::kube(format!("{what} Lease {}/{LEASE_NAME}", s.namespace));
    let Some(mut lease) = api.get_opt(LEASE_NAME).await.map_err(err("read"))? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some(s.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec_for(s, 0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(err("create")(e)),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(s.identity.as_str());
    let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if !ours && !released && !expired(&spec, Timestamp::now()) {
        return Ok(false);
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
    let acquire = if ours {
        spec.acquire_time.clone()
    } else {
        None
    };
    lease.spec = Some(spec_for(s, transitions, acquire));
    // resourceVersion is kept: a concurrent taker makes this a conflict.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(err("update")(e)),
    }
}

/// Block until this replica leads, then keep renewing in the background;
/// if renewal fails for a whole lease duration the process exits.
pub async fn lead(client: kube::Client, s: LeaseSettings) {
    // Standbys ask often (a released Lease is taken within this); the
    // leader renews three times per lease duration.
    let standby_retry = (s.duration / 3).min(Duration::from_secs(2));
    let retry = s.duration / 3;
    loop {
        match try_acquire(&client, &s).await {
            Ok(true) => break,
            Ok(false) => tracing::info!(identity = %s.identity, "another replica leads; waiting"),
            Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
        }
        tokio::time::sleep(standby_retry).await;
    }
    tracing::info!(identity = %s.identity, "leading");
    tokio::spawn(async move {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(retry).await;
            match try_acquire(&client, &s).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("lost the leader Lease to another replica; exiting");
                    std::process::exit(1);
                }
                Err(e) => tracing::warn!(error = %e, "failed to renew the leader Lease"),
            }
            if last_ok.elapsed() > s.duration {
                tracing::error!("could not renew the leader Lease in time; exiting");
                std::process::exit(1);
            }
        }
    });
}

/// Give the Lease up (on shutdown) if this replica holds it, so that a
/// standby takes over at its next try instead of after the lease duration.
pub async fn release(client: &kube::Client, s: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let Ok(Some(mut lease)) = api.get_opt(LEASE_NAME).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(identity = %s.identity, "released the leader Lease"),
        Err(e) => tracing::warn!(error = %e, "failed to release the leader Lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let now = Timestamp::now();
        let fresh = LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!expired(&fresh, now));
        let later = Timestamp::from_second(now.as_second() + 20).unwrap();
        assert!(expired(&fresh, later));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
