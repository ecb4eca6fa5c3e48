//! `up` is done when the cluster can grow: the operator's pod runs, is
//! ready, and holds the leader Lease. Before, `up` said "done" seconds
//! before the operator existed, and a WorkerJoin applied right after sat in
//! Pending that long.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

const NAMESPACE: &str = "kubeup-system";
const LEASE: &str = "kubeup-operator";
const TIMEOUT: Duration = Duration::from_secs(180);

/// Wait until a running, ready operator pod holds the leader Lease; its
/// name.
pub async fn wait_leading(client: &Client) -> Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    let mut seen = String::from("no Lease yet");
    while started.elapsed() < TIMEOUT {
        let holder = leases
            .get_opt(LEASE)
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty());
        if let Some(holder) = holder {
            match pods.get_opt(&holder).await? {
                Some(pod) if serving(&pod) => return Ok(holder),
                Some(_) => seen = format!("{holder} holds the Lease but is not ready"),
                None => seen = format!("the Lease names {holder}, which no longer exists"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "the kubeup operator did not start leading within {}s ({seen}): see `kubectl -n {NAMESPACE} get pods` and `kubectl -n {NAMESPACE} logs deploy/kubeup-operator`",
        TIMEOUT.as_secs()
    )
}

/// Running, Ready and not on its way out.
fn serving(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    running && ready && pod.metadata.deletion_timestamp.is_none()
}
