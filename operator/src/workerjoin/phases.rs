//! A join, as one list of phases on the engine (`kubeup_provision::phase`):
//!
//! ```text
//! Connecting → Preflight ─┬─ Installing ───┐
//!                         ├─ Certificates ─┼─ Starting → WaitingForNode
//!                         └─ Configuring ──┘
//! ```
//!
//! The certificate is issued and the configuration written while the
//! binaries stream: only the kubelet's start needs all three. A dry run
//! walks the same list: it connects and runs preflight, and asks the
//! others for their plan.
//!
//! Longer than most modules on purpose: one small type per phase, so the
//! whole join reads in one file, its list and graph at the top.

use futures::FutureExt;
use futures::future::BoxFuture;
use kubeup_crds::WorkerJoinCondition as Condition;
use kubeup_crds::conditions::ConditionStatus;
use kubeup_crds::workerjoin::{Reason, WorkerJoinPhase as P};
use kubeup_provision::converge::{self, Changes, Role};
use kubeup_provision::hostplan::{Unit, layout, network, node, worker};
use kubeup_provision::phase::{Effect, Live, Phase, Procedure};

use crate::error::{Error, Result};
use crate::workerjoin::join::{Join, cluster_ca};
use crate::workerjoin::{access, credentials, decide, pending};

/// The join, in order.
pub fn procedure<'p, 'a>(host: &str) -> Procedure<'p, Join<'a>, P, Error> {
    Procedure::new(
        host,
        vec![
            &Connecting,
            &Preflight,
            &Installing,
            &Certificates,
            &Configuring,
            &Starting,
            &WaitingForNode,
        ],
    )
}

type Planned<'f> = BoxFuture<'f, Result<Vec<String>>>;
type Ran<'f> = BoxFuture<'f, Result<String>>;

/// The phases that only need preflight (and the node name it found).
const AFTER_PREFLIGHT: &[P] = &[P::Preflight];

pub struct Connecting;

impl<'a> Phase<Join<'a>, P, Error> for Connecting {
    fn key(&self) -> P {
        P::Connecting
    }
    fn title(&self) -> &'static str {
        P::Connecting.describe()
    }
    fn effect(&self) -> Effect {
        Effect::Observe
    }
    /// Every pass connects, a resumed one too.
    fn needed(&self, _: &Join<'a>, _: bool) -> bool {
        true
    }
    fn plan<'f>(&'f self, _: &'f Join<'a>) -> Planned<'f> {
        async { Ok(vec![]) }.boxed()
    }
    fn run<'f>(&'f self, j: &'f Join<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let s = &j.ctx.settings;
            let conn =
                match access::connect(&j.ctx.client, &j.namespace(), j.wj, &s.ssh, &s.namespace)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        let e = Error::from(e);
                        if e.is_host_key() {
                            let msg = e.to_string();
                            j.condition(
                                Condition::HostKeyVerified,
                                ConditionStatus::False,
                                Reason::HostKeyMismatch.as_str(),
                                msg,
                            )
                            .await;
                        }
                        return Err(e);
                    }
                };
            let fp = conn.fingerprint.unwrap_or_default();
            let recorded = conn.recorded_key;
            j.with_status(|st| {
                st.host_key_fingerprint = Some(fp.clone());
                if recorded.is_some() {
                    st.host_key = recorded;
                }
            })
            .await;
            let policy = format!("{:?}", j.wj.spec.host_key.policy);
            j.condition(
                Condition::HostKeyVerified,
                ConditionStatus::True,
                Reason::Verified.as_str(),
                format!("host key {fp} verified (policy {policy})"),
            )
            .await;
            j.set_session(conn.session);
            Ok(fp)
        }
        .boxed()
    }
}

pub struct Preflight;

impl<'a> Phase<Join<'a>, P, Error> for Preflight {
    fn key(&self) -> P {
        P::Preflight
    }
    fn title(&self) -> &'static str {
        P::Preflight.describe()
    }
    fn effect(&self) -> Effect {
        Effect::Observe
    }
    /// Also when resuming without a node name (it comes from the host).
    fn needed(&self, j: &Join<'a>, resumed_past: bool) -> bool {
        !resumed_past || j.node_name().is_none()
    }
    fn plan<'f>(&'f self, _: &'f Join<'a>) -> Planned<'f> {
        async { Ok(vec![]) }.boxed()
    }
    fn run<'f>(&'f self, j: &'f Join<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let session = j.session()?;
            // What an earlier pass owed is read now, off Starting's path.
            let (report, owed) = tokio::try_join!(
                async { Ok::<_, Error>(converge::preflight(session, Role::Worker).await?) },
                pending::take(session),
            )?;
            j.set_owed_earlier(owed);
            if let Some(failures) = report.error_text() {
                j.condition(
                    Condition::PreflightPassed,
                    ConditionStatus::False,
                    Reason::PreflightFailed.as_str(),
                    failures.clone(),
                )
                .await;
                return Err(Error::Preflight {
                    host: session.host().to_string(),
                    failures,
                });
            }
            let warnings: Vec<String> = report
                .warnings()
                .iter()
                .map(|c| format!("{}: {}", c.name, c.message))
                .collect();
            let message = if warnings.is_empty() {
                "all checks passed".to_string()
            } else {
                format!("passed with warnings: {}", warnings.join("; "))
            };
            j.condition(
                Condition::PreflightPassed,
                ConditionStatus::True,
                Reason::Passed.as_str(),
                message.clone(),
            )
            .await;
            let recorded = j.with_status(|s| s.clone()).await;
            let named = decide::node_name(&j.wj.spec, &recorded, Some(&report.hostname));
            if let Some(name) = &named {
                j.claim_node_name(name, &j.cluster).await?;
                j.set_node_name(name.clone());
            }
            j.with_status(|s| s.node_name = named).await;
            Ok(message)
        }
        .boxed()
    }
}

pub struct Installing;

impl<'a> Phase<Join<'a>, P, Error> for Installing {
    fn key(&self) -> P {
        P::Installing
    }
    fn title(&self) -> &'static str {
        P::Installing.describe()
    }
    fn after(&self) -> Option<&'static [P]> {
        Some(AFTER_PREFLIGHT)
    }
    fn plan<'f>(&'f self, j: &'f Join<'a>) -> Planned<'f> {
        async move {
            let c = push_bundle(j, true).await?;
            Ok(c.uploaded.iter().map(|p| format!("upload {p}")).collect())
        }
        .boxed()
    }
    fn run<'f>(&'f self, j: &'f Join<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let c = push_bundle(j, false).await?;
            let detail = format!("{} uploaded", c.uploaded.len());
            // Owed restarts survive an operator restart before Starting.
            j.merge_changes(c, true).await?;
            let manifest = &j.bundle.1;
            let version = j.cluster.spec.kubernetes_version.clone();
            j.with_status(|s| {
                s.versions.insert("kubernetes".into(), version);
                for (name, f) in &manifest.files {
                    if let Some(bin) = name.strip_prefix("bin/")
                        && ["containerd", "runc"].contains(&bin)
                        && !f.version.is_empty()
                    {
                        s.versions.insert(bin.into(), f.version.clone());
                    }
                }
            })
            .await;
            Ok(detail)
        }
        .boxed()
    }
}

pub struct Certificates;

impl<'a> Phase<Join<'a>, P, Error> for Certificates {
    fn key(&self) -> P {
        P::Certificates
    }
    fn title(&self) -> &'static str {
        P::Certificates.describe()
    }
    fn after(&self) -> Option<&'static [P]> {
        Some(AFTER_PREFLIGHT)
    }
    fn plan<'f>(&'f self, j: &'f Join<'a>) -> Planned<'f> {
        async move {
            Ok(vec![format!(
                "issue a client certificate for {} through the CSR API and Node-bound ServiceAccount tokens for the node components (unless current)",
                j.known_node_name()?
            )])
        }
        .boxed()
    }
    fn run<'f>(&'f self, j: &'f Join<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let session = j.session()?;
            let node_name = j.known_node_name()?;
            let ca_pem = cluster_ca(&j.ctx.client, &j.ctx.settings.namespace).await?;
            // The name is checked again right before its identity is issued.
            j.claim_node_name(node_name, &j.cluster).await?;
            let issued = j.certificates(session, node_name, &ca_pem).await?;
            let owed = [("kubelet", Unit::Kubelet), ("kube-proxy", Unit::KubeProxy)]
                .into_iter()
                .filter(|(c, _)| issued.contains(c))
                .map(|(_, u)| u);
            j.owe_restart(owed).await?;
            let msg = if issued.is_empty() {
                "the credentials on the host are current".to_string()
            } else {
                format!(
                    "issued for {node_name}: {} (kubelet: CSR API; node components: TokenRequest API)",
                    issued.join(", ")
                )
            };
            j.condition(
                Condition::CertificateIssued,
                ConditionStatus::True,
                Reason::Issued.as_str(),
                msg.clone(),
            )
            .await;
            Ok(msg)
        }
        .boxed()
    }
}

pub struct Configuring;

impl<'a> Phase<Join<'a>, P, Error> for Configuring {
    fn key(&self) -> P {
        P::Configuring
    }
    fn title(&self) -> &'static str {
        P::Configuring.describe()
    }
    fn after(&self) -> Option<&'static [P]> {
        Some(AFTER_PREFLIGHT)
    }
    fn plan<'f>(&'f self, j: &'f Join<'a>) -> Planned<'f> {
        async move {
            let node_name = j.known_node_name()?;
            let input = j.input(node_name);
            let files = worker::worker_files_with(&input, &j.cluster.name_any(), j.eviction());
            let c = converge::write_files(j.session()?, &files, true).await?;
            let mut out: Vec<String> = c.written.iter().map(|p| format!("write {p}")).collect();
            out.push(format!("create Node {node_name} before the kubelet starts"));
            Ok(out)
        }
        .boxed()
    }
    fn run<'f>(&'f self, j: &'f Join<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let session = j.session()?;
            let node_name = j.known_node_name()?;
            let input = j.input(node_name);
            let cni = j.cluster.spec.networking.cni;
            let ca_pem = cluster_ca(&j.ctx.client, &j.ctx.settings.namespace).await?;
            let mut files = worker::worker_files_with(&input, &j.cluster.name_any(), j.eviction());
            files.push(worker::cluster_ca(&ca_pem));
            files.extend(network::node_files(cni, &input));
            let mut installed: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
            installed.extend(worker::worker_cert_paths());
            // Independent round trips at once: the files (one, see
            // `write_files`), the list `reset` works from, forwarding, and
            // the Node before the kubelet (the controller-manager gives it a
            // podCIDR at once, so the CNI config, written in one more round
            // trip, is there when the kubelet starts).
            let (written, _, (), cidr) = tokio::try_join!(
                async { Ok::<_, Error>(converge::write_files(session, &files, false).await?) },
                async { Ok(converge::record_installed(session, &installed, false).await?) },
                credentials::run(session, node::FORWARDING_NOW),
                j.precreate_node(node_name),
            )?;
            let detail = format!("{} written", written.written.len());
            j.merge_changes(written, true).await?;
            j.with_status(|s| s.api_backends = input.api_backends.clone())
                .await;
            // The runtime needs neither the kubelet's certificate nor the
            // CNI config (it reads that when it appears): started now when
            // its binary is there too (a machine image, a resumed join), it
            // is up before Starting, which then starts the kubelet at once.
            let containerd = layout::bin(&input.kubernetes_version, "containerd");
            let (started, ()) = tokio::try_join!(
                async {
                    Ok::<_, Error>(
                        converge::start_if_idle(session, Unit::Containerd, &containerd).await?,
                    )
                },
                async {
                    if let Some(cidr) = cidr {
                        let conflist: Vec<_> =
                            network::cni_conflist(cni, &cidr).into_iter().collect();
                        let c = converge::write_files(session, &conflist, false).await?;
                        j.merge_changes(c, true).await?;
                        j.set_pod_cidr(cidr);
                    }
                    Ok(())
                },
            )?;
            if started {
                j.started_early(Unit::Containerd).await;
            }
            Ok(detail)
        }
        .boxed()
    }
}

pub struct Starting;

impl<'a> Phase<Join<'a>, P, Error> for Starting {
    fn key(&self) -> P {
        P::Starting
    }
    fn title(&self) -> &'static str {
        P::Starting.describe()
    }
    fn after(&self) -> Option<&'static [P]> {
        Some(&[P::Installing, P::Certificates, P::Configuring])
    }
    fn plan<'f>(&'f self, _: &'f Join<'a>) -> Planned<'f> {
        async { Ok(vec!["start containerd, kubelet, kube-proxy".to_string()]) }.boxed()
    }
    fn run<'f>(&'f self, j: &'f Join<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let session = j.session()?;
            let mut units = Unit::WORKER.to_vec();
            if j.pod_cidr().is_some() {
                // The pod network starts with the kubelet (it needs the podCIDR).
                units.extend_from_slice(network::units(j.cluster.spec.networking.cni));
            }
            // Restarts owed by an earlier pass that stopped before this one.
            let owed = j.owed_earlier().await?;
            let (mut restart, units_changed) = j.restarts().await;
            restart.extend(owed);
            let c = converge::ensure_units(session, &units, &restart, units_changed, false).await?;
            pending::clear(session).await?;
            Ok(c.units_summary())
        }
        .boxed()
    }
}

pub struct WaitingForNode;

impl<'a> Phase<Join<'a>, P, Error> for WaitingForNode {
    fn key(&self) -> P {
        P::WaitingForNode
    }
    fn title(&self) -> &'static str {
        P::WaitingForNode.describe()
    }
    /// Every pass that gets here waits (a resumed one too).
    fn needed(&self, _: &Join<'a>, _: bool) -> bool {
        true
    }
    fn plan<'f>(&'f self, j: &'f Join<'a>) -> Planned<'f> {
        async move {
            Ok(vec![
                "import the images into containerd".to_string(),
                format!("wait for Node {} to be Ready", j.known_node_name()?),
            ])
        }
        .boxed()
    }
    fn run<'f>(&'f self, j: &'f Join<'a>, _: &'f Live) -> Ran<'f> {
        async move {
            let session = j.session()?;
            let node_name = j.known_node_name()?;
            let cni = j.cluster.spec.networking.cni;
            // The images (pause, …) go into containerd while the kubelet
            // registers and turns Ready, which needs none of them; the
            // import waits for containerd's socket and is skipped once done.
            let import = async {
                let imported = converge::import_images(session, &j.bundle.1, false).await?;
                Ok::<_, Error>(imported.len())
            };
            let (imported, ready) =
                tokio::try_join!(import, j.wait_for_node(session, node_name, cni))?;
            if ready {
                j.mark_ready();
                Ok(format!(
                    "Node {node_name} Ready; {imported} images imported"
                ))
            } else {
                Ok(format!("Node {node_name} not Ready yet"))
            }
        }
        .boxed()
    }
}

/// The bundle's files the host lacks (its plan with `dry_run`).
///
/// The upload goes over a connection of its own: its streams fill the
/// connection's windows for a second or more, and the commands of the
/// phases beside it (certificates, configuration) must not queue behind
/// them on one russh session (a join of three hosts at once stalled so).
async fn push_bundle(j: &Join<'_>, dry_run: bool) -> Result<Changes> {
    let (dir, manifest) = (&j.bundle.0, &j.bundle.1);
    let compressed = j.ctx.bundles.compressed();
    if dry_run {
        let c = converge::push_bundle(j.session()?, dir, manifest, compressed, None, true).await?;
        return Ok(c);
    }
    // A host whose bundle is in place (a machine image, a join resumed
    // after Installing) needs no connection of its own.
    if converge::bundle_in_place(j.session()?, manifest).await? {
        return Ok(Changes::default());
    }
    let s = &j.ctx.settings;
    let bulk = access::connect(&j.ctx.client, &j.namespace(), j.wj, &s.ssh, &s.namespace)
        .await?
        .session;
    let pushed = converge::push_bundle(&bulk, dir, manifest, compressed, None, false).await;
    bulk.close().await;
    Ok(pushed?)
}

use kube::ResourceExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_lists_every_working_phase_once_in_status_order() {
        let p: Procedure<'_, Join<'_>, P, Error> = procedure("h");
        let keys = p.keys();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "listed in the order status shows them");
        let working: Vec<P> = P::ALL
            .into_iter()
            .filter(|k| (P::Connecting..=P::WaitingForNode).contains(k))
            .collect();
        assert_eq!(keys, working);
    }
}
