//! Bringing a joined worker to what this version of kubeup installs, from
//! the steady-state renewal (which connects anyway): workers joined by an
//! earlier kubeup get what changed since, and nothing is rewritten or
//! restarted when it is already current.

use crate::error::{Error, Result};
use crate::workerjoin::join::Join;

/// Everything below, in order.
pub(crate) async fn bring_current(
    join: &Join<'_>,
    session: &kubeup_provision::ssh::Session,
    node_name: &str,
) -> Result<()> {
    pod_network_current(join, session, node_name).await?;
    serving_cert_current(join, session).await
}

/// The pod network's files as this version renders them (a worker joined
/// by an older kubeup ran flanneld on the kubelet's credential, which no
/// longer may list Nodes): only what differs is written, and only what it
/// belongs to restarts.
async fn pod_network_current(
    join: &Join<'_>,
    session: &kubeup_provision::ssh::Session,
    node_name: &str,
) -> Result<()> {
    use kubeup_provision::converge;
    use kubeup_provision::hostplan::network;
    let input = join.input(node_name);
    let cni = join.cluster.spec.networking.cni;
    let files = network::node_files(cni, &input);
    let changes = converge::write_files(session, &files, false).await?;
    if !changes.written.is_empty() {
        tracing::info!(written = ?changes.written, "pod network files brought up to date");
        converge::ensure_units(
            session,
            network::units(cni),
            &changes.restart,
            changes.units_changed,
            false,
        )
        .await?;
    }
    Ok(())
}

/// Where the kubelet keeps the serving certificate it obtained (with its
/// key in the same file: only the certificate block is ever read).
const KUBELET_SERVING_PEM: &str = "/var/lib/kubelet/pki/kubelet-server-current.pem";

/// A worker joined before kubelet serving certificates had their own CA
/// still serves one of the cluster CA, which the apiserver no longer
/// accepts for kubelets: drop it and restart the kubelet, which asks for a
/// new one (approved as at the join). Nothing when the controller does not
/// publish a kubelet-serving CA, or the certificate is already its.
async fn serving_cert_current(
    join: &Join<'_>,
    session: &kubeup_provision::ssh::Session,
) -> Result<()> {
    let ctx = join.ctx;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let published = cms
        .get_opt(crate::certexpiry::CONFIGMAP)
        .await
        .map_err(Error::kube(format!(
            "read ConfigMap {}",
            crate::certexpiry::CONFIGMAP
        )))?;
    let Some(ca) = published
        .and_then(|c| c.data)
        .and_then(|mut d| d.remove("kubelet-serving-ca.crt"))
    else {
        return Ok(());
    };
    let cert = session
        .run(
            &kubeup_provision::ssh::Command::shell(format!(
                "[ -s {KUBELET_SERVING_PEM} ] && sed -n '/-BEGIN CERTIFICATE-/,/-END CERTIFICATE-/p' {KUBELET_SERVING_PEM}; true"
            ))
            .privileged(),
        )
        .await
        .map_err(Error::ssh(session.host()))?
        .stdout_str();
    if cert.trim().is_empty() || kubeup_provision::pki::check_issued_by(&cert, &ca).is_ok() {
        return Ok(());
    }
    tracing::info!(
        "the kubelet's serving certificate is not the kubelet-serving CA's; renewing it"
    );
    session
        .run(
            &kubeup_provision::ssh::Command::shell(
                "rm -f /var/lib/kubelet/pki/kubelet-server-*.pem && systemctl restart kubelet",
            )
            .privileged(),
        )
        .await
        .map_err(Error::ssh(session.host()))?;
    Ok(())
}
