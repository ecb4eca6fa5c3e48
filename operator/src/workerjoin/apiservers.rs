//! A joined machine's way to the API follows the cluster's controllers: its
//! local load balancer (haproxy on loopback, see
//! `kubeup_provision::hostplan::apilb`) lists every controller's apiserver.
//! When controllers are added or removed (`kubeup up` applies the Cluster,
//! whose change wakes every WorkerJoin), the new list is written to the
//! machine and haproxy reloaded: connections in flight carry on, the kubelet
//! and the pods are never restarted for it.

use kubeup_crds::WorkerJoin;
use kubeup_crds::workerjoin::WorkerJoinStatus;
use kubeup_provision::converge;
use kubeup_provision::hostplan::{Unit, apilb};

use crate::error::Result;
use crate::runtime::context::Context;
use crate::workerjoin::{access, join};

/// How soon a failed update is tried again.
pub const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Make the machine's backends the Cluster's controllers when they differ
/// from what `status` says was written; records the new list in `status`.
/// SSH only when they differ.
pub async fn keep_current(
    ctx: &Context,
    wj: &WorkerJoin,
    status: &mut WorkerJoinStatus,
) -> Result<()> {
    let cluster = join::read_cluster(&ctx.client).await?;
    let want: Vec<String> = cluster
        .spec
        .controllers
        .iter()
        .map(|c| c.address.clone())
        .collect();
    if want.is_empty() || status.api_backends == want {
        return Ok(());
    }
    let namespace = wj.metadata.namespace.clone().unwrap_or_default();
    let conn = access::connect(
        &ctx.client,
        &namespace,
        wj,
        &ctx.settings.ssh,
        &ctx.settings.namespace,
    )
    .await?;
    let session = conn.session;
    let result = async {
        let written =
            converge::write_files(&session, &[apilb::haproxy_config(&want)], false).await?;
        if !written.written.is_empty() {
            let unit = [Unit::ApiLb];
            converge::ensure_units(&session, &unit, &unit.into_iter().collect(), false, false)
                .await?;
        }
        tracing::info!(backends = ?want, "the machine's apiserver backends follow the cluster");
        Ok::<_, crate::error::Error>(())
    }
    .await;
    session.close().await;
    result?;
    status.api_backends = want;
    Ok(())
}
