//! Leader election through a `coordination.k8s.io` Lease: one replica
//! reconciles, the others wait; a leader that cannot renew in time exits so
//! that it never runs beside a new leader.
//!
//! Two rules (as client-go's leaderelection) keep two leaders from ever
//! overlapping: a standby judges expiry on its own monotonic clock, from
//! the moment it saw the Lease record last change, never from the
//! timestamps another machine wrote (clocks differ); and a leader gives up
//! when it has not renewed within the renew deadline, shorter than the
//! lease, with every renew attempt cut off at that deadline (a hung
//! request must not keep a stale leader alive).

use std::time::Duration;

use tokio::time::Instant;

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

impl LeaseSettings {
    /// How long a leader may go without a successful renew: two thirds of
    /// the lease (client-go: 10 s of 15 s), so it stops leading well before
    /// a standby may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// What this replica has seen of the Lease: the record and when, on its own
/// monotonic clock, it last changed.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    seen: Option<(String, Instant)>,
}

impl Observer {
    /// Whether the holder of `spec` has let it run out: no change to the
    /// record for a whole lease duration, as measured here.
    pub fn expired(&mut self, spec: &LeaseSpec, now: Instant) -> bool {
        let record = format!(
            "{:?}|{:?}|{:?}",
            spec.holder_identity,
            spec.renew_time.as_ref().map(|t| t.0),
            spec.lease_transitions
        );
        let secs = u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15);
        match &self.seen {
            Some((r, at)) if *r == record => *at + Duration::from_secs(secs) < now,
            _ => {
                self.seen = Some((record, now));
                false
            }
        }
    }
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
pub async fn try_acquire(
    client: &kube::Client,
    s: &LeaseSettings,
    observer: &mut Observer,
) -> Result<bool> {
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
    if !ours && !released && !observer.expired(&spec, Instant::now()) {
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

/// Block until this replica leads, then keep renewing in the background
/// (the returned task); when leading can no longer be vouched for, the
/// process exits.
pub async fn lead(client: kube::Client, s: LeaseSettings) -> tokio::task::JoinHandle<()> {
    // Standbys ask often (a released Lease is taken within this).
    let standby_retry = (s.duration / 3).min(Duration::from_secs(2));
    let mut observer = Observer::default();
    loop {
        match try_acquire(&client, &s, &mut observer).await {
            Ok(true) => break,
            Ok(false) => tracing::info!(identity = %s.identity, "another replica leads; waiting"),
            Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
        }
        tokio::time::sleep(standby_retry).await;
    }
    tracing::info!(identity = %s.identity, "leading");
    tokio::spawn(async move {
        let why = keep_leading(&client, &s, Instant::now()).await;
        tracing::error!("{why}; exiting");
        std::process::exit(1);
    })
}

/// Renew three times per renew deadline until leading can no longer be
/// vouched for; returns why. `acquired` is when the Lease was last written
/// by us.
pub async fn keep_leading(client: &kube::Client, s: &LeaseSettings, acquired: Instant) -> String {
    let deadline = s.renew_deadline();
    let retry = deadline / 3;
    let mut observer = Observer::default();
    // From the start of the last successful attempt: the Lease says we
    // renewed no later than that.
    let mut last_ok = acquired;
    loop {
        tokio::time::sleep(retry).await;
        let started = Instant::now();
        let left = deadline.saturating_sub(last_ok.elapsed());
        match tokio::time::timeout(left, try_acquire(client, s, &mut observer)).await {
            Ok(Ok(true)) => last_ok = started,
            Ok(Ok(false)) => return "lost the leader Lease to another replica".into(),
            Ok(Err(e)) => tracing::warn!(error = %e, "failed to renew the leader Lease"),
            Err(_) => tracing::warn!("renewing the leader Lease timed out"),
        }
        if last_ok.elapsed() >= deadline {
            return format!(
                "could not renew the leader Lease within the renew deadline ({deadline:?})"
            );
        }
    }
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
    fn expiry_is_judged_on_the_observers_clock() {
        // Written by a holder whose clock is an hour behind: by wall clock
        // long expired, yet just renewed.
        let skewed = Timestamp::from_second(Timestamp::now().as_second() - 3600).unwrap();
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: Some(MicroTime(skewed)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        let mut o = Observer::default();
        let t0 = Instant::now();
        assert!(!o.expired(&spec, t0), "first seen: not expired");
        assert!(!o.expired(&spec, t0 + Duration::from_secs(14)));
        assert!(
            o.expired(&spec, t0 + Duration::from_secs(16)),
            "unchanged for a lease"
        );
        // A renewal (a new record) starts the count again.
        let mut renewed = spec.clone();
        renewed.renew_time = Some(MicroTime(Timestamp::now()));
        assert!(!o.expired(&renewed, t0 + Duration::from_secs(17)));
        assert!(!o.expired(&renewed, t0 + Duration::from_secs(30)));
    }
}
