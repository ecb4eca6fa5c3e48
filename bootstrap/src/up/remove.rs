//! Shrinking by editing cluster.yaml: a controller the running cluster's
//! `Cluster` object lists and cluster.yaml no longer does is removed by
//! `up`, one at a time, before the remaining controllers converge:
//!
//! connect → quorum gate → drain → leave etcd → stop units → remove files →
//! clean network → delete its Node.
//!
//! The gate refuses a removal that would leave etcd without a majority of
//! healthy members (the arithmetic is in the message) or no controller at
//! all; it runs before anything changes. The host leaves etcd before it is
//! reset, so no stale member stays behind. Its SSH details come from the
//! `Cluster` object as the last `up` applied it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::etcdctl::{Health, Member};
use anyhow::{Context as _, Result, bail};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kubeup_crds::Cluster;
use kubeup_crds::cluster::ControllerHost;
use kubeup_provision::converge::ConvergeError;
use kubeup_provision::converge::reset_phases::{OnHost, ResetPhase, ResetSteps};
use kubeup_provision::phase::{Effect, Live, Phase, PhaseKey, Procedure};
use kubeup_provision::ssh::Session;

use super::connect::{Connect, Link, with_causes};
use super::context::ControllerContext;
use crate::progress::Progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovePhase {
    Connect,
    QuorumGate,
    Drain,
    LeaveEtcd,
}

impl PhaseKey for RemovePhase {
    fn name(self) -> &'static str {
        match self {
            RemovePhase::Connect => "connect",
            RemovePhase::QuorumGate => "quorum gate",
            RemovePhase::Drain => "drain",
            RemovePhase::LeaveEtcd => "leave etcd",
        }
    }
}

/// The running cluster's `Cluster` object, as the last `up` applied it;
/// None when no cluster answers yet (a first `up`).
pub async fn running_cluster(ctx: &ControllerContext) -> Result<Option<Cluster>> {
    let kubeconfig = ctx.loaded.super_admin_kubeconfig();
    let Some(first) = ctx.controllers().first() else {
        return Ok(None);
    };
    if !kubeconfig.exists() {
        return Ok(None);
    }
    let server = format!("https://{}:6443", first.address);
    let Ok(client) = super::admin_client_at(&kubeconfig, Some(&server)).await else {
        return Ok(None);
    };
    let api: Api<Cluster> = Api::all(client);
    let Ok(Ok(list)) =
        tokio::time::timeout(Duration::from_secs(5), api.list(&ListParams::default())).await
    else {
        return Ok(None);
    };
    let running = list.items.into_iter().next();
    if let Some(r) = &running {
        check_etcd_kept(r, ctx)?;
    }
    Ok(running)
}

/// The hosts of `from` (with their SSH details) that `other` does not list:
/// of the running `Cluster`'s, those cluster.yaml no longer lists, and the
/// other way round, those it adds.
fn left_out(from: &[ControllerHost], other: &[ControllerHost]) -> Vec<ControllerHost> {
    from.iter()
        .filter(|h| !other.iter().any(|o| o.address == h.address))
        .cloned()
        .collect()
}

/// The controllers the running cluster has that cluster.yaml no longer
/// lists, with the SSH details the cluster's `Cluster` object keeps.
pub async fn removed_controllers(
    ctx: &ControllerContext,
    running: Option<&Cluster>,
) -> Result<Vec<ControllerHost>> {
    let (Some(running), Some(first)) = (running, ctx.controllers().first()) else {
        return Ok(vec![]);
    };
    let candidates = left_out(&running.spec.controllers, ctx.controllers());
    if candidates.is_empty() {
        return Ok(candidates);
    }
    // Whoever may edit the Cluster object must not make `up` drain, reset
    // and SSH into a machine of their choosing: only a host etcd itself
    // (asked on a controller cluster.yaml lists) has as a member leaves;
    // with dedicated etcd hosts, only a host that is a control-plane Node
    // (that label is kubeup's to set: no kubelet may give it itself).
    let (known, what) = if ctx.etcd_hosts().is_empty() {
        let peers = members_seen_by(ctx, first).await?;
        let addresses = peers
            .iter()
            .filter_map(|u| u.strip_prefix("https://")?.strip_suffix(":2380"))
            .map(str::to_string)
            .collect();
        (addresses, "etcd member")
    } else {
        (
            control_plane_addresses(&api_client(ctx).await?).await?,
            "control-plane Node",
        )
    };
    let (known, strangers): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|c| known.contains(&c.address));
    if let Some(s) = strangers.first() {
        bail!(
            "the running Cluster lists the controller {} that cluster.yaml does not, but it is no {what}: nothing removed. Put it back in cluster.yaml or remove it from the Cluster object (`kubectl edit clusters`)",
            s.address
        );
    }
    Ok(known)
}

/// Where etcd runs is chosen when the cluster is made: moving it between
/// the controllers and dedicated hosts would point the apiservers at
/// another (empty) etcd. Dedicated hosts may be added or removed, one way
/// per `up` (a replacement is a removal, then an addition). Refused before
/// anything changes.
fn check_etcd_kept(running: &Cluster, ctx: &ControllerContext) -> Result<()> {
    let (was, now) = (&running.spec.etcd.external[..], ctx.etcd_hosts());
    let say = |hosts: &[ControllerHost]| {
        if hosts.is_empty() {
            "on the controllers".to_string()
        } else {
            format!("on {}", addresses(hosts))
        }
    };
    if was.is_empty() != now.is_empty() {
        bail!(
            "spec.etcd.external: the running cluster's etcd runs {}, cluster.yaml says {}: moving etcd between the controllers and dedicated hosts is not supported; nothing was changed. Put spec.etcd back as it was",
            say(was),
            say(now)
        );
    }
    let (added, removed) = (left_out(now, was), left_out(was, now));
    if !added.is_empty() && !removed.is_empty() {
        bail!(
            "spec.etcd.external: cluster.yaml adds {} and removes {} at once; nothing was changed. Change the dedicated etcd hosts one way per `up`: remove first (run up), then add (run up again)",
            addresses(&added),
            addresses(&removed)
        );
    }
    Ok(())
}

/// `a, b, c`
fn addresses(hosts: &[ControllerHost]) -> String {
    hosts
        .iter()
        .map(|h| h.address.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The addresses of the dedicated etcd hosts cluster.yaml adds to the
/// running cluster's: they join its etcd as learners. None without a
/// running cluster (a first `up` starts every member together).
pub fn added_etcd_hosts(ctx: &ControllerContext, running: Option<&Cluster>) -> Vec<String> {
    running
        .map(|r| left_out(ctx.etcd_hosts(), &r.spec.etcd.external))
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.address)
        .collect()
}

/// The dedicated etcd hosts the running cluster has that cluster.yaml no
/// longer lists. Only a host etcd itself has as a member (asked on a
/// remaining etcd host) leaves: whoever may edit the `Cluster` object must
/// not make `up` reset a machine of their choosing.
pub async fn removed_etcd_hosts(
    ctx: &ControllerContext,
    running: Option<&Cluster>,
) -> Result<Vec<ControllerHost>> {
    let (Some(running), Some(asked)) = (running, ctx.etcd_hosts().first()) else {
        return Ok(vec![]);
    };
    let candidates = left_out(&running.spec.etcd.external, ctx.etcd_hosts());
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let peers = members_seen_by(ctx, asked).await?;
    if let Some(s) = candidates
        .iter()
        .find(|c| !peers.contains(&super::etcdctl::peer_url(&c.address)))
    {
        bail!(
            "the running Cluster lists the etcd host {} that cluster.yaml does not, but it is no etcd member: nothing removed. Put it back in cluster.yaml or remove it from the Cluster object (`kubectl edit clusters`)",
            s.address
        );
    }
    Ok(candidates)
}

/// The super-admin client through the first controller's apiserver.
async fn api_client(ctx: &ControllerContext) -> Result<kube::Client> {
    let first = ctx
        .controllers()
        .first()
        .map(|c| format!("https://{}:6443", c.address))
        .unwrap_or_default();
    super::admin_client_at(&ctx.loaded.super_admin_kubeconfig(), Some(&first)).await
}

/// The InternalIPs of the control-plane Nodes.
async fn control_plane_addresses(client: &kube::Client) -> Result<Vec<String>> {
    Ok(control_plane_nodes(client)
        .await?
        .into_iter()
        .flat_map(|n| internal_ips(&n))
        .collect())
}

async fn control_plane_nodes(client: &kube::Client) -> Result<Vec<Node>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let controllers =
        ListParams::default().labels(kubeup_provision::hostplan::node::CONTROL_PLANE_ROLE);
    Ok(nodes.list(&controllers).await?.items)
}

fn internal_ips(n: &Node) -> Vec<String> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect()
}

/// The leaving controller's Node (the control-plane Node with its address;
/// never a worker's), remembered for the drain and the deletion.
async fn find_node(l: &Leaving) -> Result<()> {
    let address = &l.link.controller.address;
    let node = control_plane_nodes(&l.client)
        .await?
        .into_iter()
        .find(|n| internal_ips(n).contains(address));
    if let Some(n) = node.and_then(|n| n.metadata.name) {
        let _ = l.node.set(n);
    }
    Ok(())
}

/// The peer URLs of etcd's members, asked on `controller` over SSH.
async fn members_seen_by(
    ctx: &ControllerContext,
    controller: &ControllerHost,
) -> Result<Vec<String>> {
    let session = ctx.connect(controller).await?;
    let version = &ctx.manifest.kubernetes_version;
    let members = super::etcdctl::member_list(&session, version, super::etcdctl::LOCAL).await;
    session.close().await;
    let members = members
        .with_context(|| format!("failed to list etcd's members on {}", controller.address))?;
    Ok(members.into_iter().flat_map(|m| m.peer_urls).collect())
}

/// What leaves: a controller, or a dedicated etcd host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaver {
    Controller,
    EtcdHost,
}

impl Leaver {
    fn what(self) -> &'static str {
        match self {
            Leaver::Controller => "controller",
            Leaver::EtcdHost => "etcd host",
        }
    }
}

/// One leaving host: its session, the cluster, what the gate found.
struct Leaving {
    kind: Leaver,
    link: Link,
    client: kube::Client,
    /// The remaining members' client URLs (the remaining controllers', or
    /// etcd hosts').
    remaining: Vec<String>,
    node: OnceLock<String>,
    member: OnceLock<u64>,
    /// A remaining host of its kind, for a leaving one that no longer
    /// answers: etcdctl runs there.
    via: Option<Link>,
    /// The addresses of the hosts removed before this one in the same run:
    /// gone when it runs, still members in a dry run's view.
    left_before: Vec<String>,
}

impl Leaving {
    /// A controller of a cluster whose etcd runs on dedicated hosts.
    fn holds_no_member(&self) -> bool {
        self.kind == Leaver::Controller && !self.link.ctx.etcd_hosts().is_empty()
    }

    /// The session etcdctl runs in: the leaving host's own, or the
    /// remaining controller's when the leaving one is unreachable.
    fn etcd_session(&self) -> Result<&Session> {
        Ok(match &self.via {
            Some(via) => via.session()?,
            None => self.link.session()?,
        })
    }
}

impl AsRef<Link> for Leaving {
    fn as_ref(&self) -> &Link {
        &self.link
    }
}

impl OnHost for Leaving {
    fn session(&self) -> Result<&Session, ConvergeError> {
        self.link.session()
    }
}

/// Remove every host in `leaving` (all of one `kind`), one at a time;
/// `dry_run` plans. Those that do not answer over SSH go first (a member
/// that is down cannot lower etcd's healthy count), and only with
/// `forget_unreachable`: they leave etcd (and lose their Node) through a
/// remaining host of their kind, without being drained or reset.
pub async fn remove_all(
    ctx: Arc<ControllerContext>,
    kind: Leaver,
    leaving: Vec<ControllerHost>,
    progress: &Progress,
    dry_run: bool,
    forget_unreachable: bool,
    file: &std::path::Path,
) -> Result<()> {
    let stay = match kind {
        Leaver::Controller => ctx.controllers(),
        Leaver::EtcdHost => ctx.etcd_hosts(),
    };
    let remaining: Vec<String> = stay
        .iter()
        .map(|c| super::etcdctl::client_url(&c.address))
        .collect();
    let client = api_client(&ctx).await?;
    // Each leaving controller's session, opened once: the removal's connect
    // phase uses it.
    let mut order = vec![];
    for host in leaving {
        let link = Link::for_host(ctx.clone(), host);
        let reachable = link.open().await.map(|_| ());
        order.push((reachable, link));
    }
    order.sort_by_key(|(reachable, _)| reachable.is_ok());
    let refused = order
        .iter()
        .find_map(|(r, link)| {
            r.as_ref()
                .err()
                .map(|why| (link.controller.address.clone(), format!("{why:#}")))
        })
        .filter(|_| !forget_unreachable);
    if let Some((address, why)) = refused {
        for (_, link) in &mut order {
            link.close().await;
        }
        let what = kind.what();
        bail!(
            "the {what} {address} to remove does not answer over SSH ({why}); nothing was removed. Start it again, or if it is gone for good run `kubeup up --forget-unreachable`: it then leaves etcd (and loses its Node) through a remaining {what}, without being drained or reset"
        );
    }
    let mut left_before = vec![];
    for (reachable, link) in order {
        let via = match (reachable, kind) {
            (Ok(()), _) => None,
            (Err(_), Leaver::Controller) => Some(Link::new(ctx.clone(), 0)?),
            (Err(_), Leaver::EtcdHost) => {
                let host = stay
                    .first()
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no etcd host remains"))?;
                Some(Link::for_host(ctx.clone(), host))
            }
        };
        let mut l = Leaving {
            kind,
            link,
            client: client.clone(),
            remaining: remaining.clone(),
            node: OnceLock::new(),
            member: OnceLock::new(),
            via,
            left_before: left_before.clone(),
        };
        let result = if l.via.is_some() {
            forget_one(&l, progress, dry_run).await
        } else {
            remove_one(&l, progress, dry_run).await
        };
        l.link.close().await;
        if let Some(via) = &mut l.via {
            via.close().await;
        }
        left_before.push(l.link.controller.address.clone());
        let command = if dry_run { "plan" } else { "up" };
        result.map_err(|e| match e {
            Removal::Prepare(f) => super::failure::explain(f, command, file, &l.link),
            Removal::Reset(f) => super::failure::explain(f, command, file, &l.link),
            Removal::Other(e) => e,
        })?;
    }
    Ok(())
}

enum Removal {
    Prepare(kubeup_provision::phase::Failed<RemovePhase, anyhow::Error>),
    Reset(kubeup_provision::phase::Failed<ResetPhase, anyhow::Error>),
    Other(anyhow::Error),
}

async fn remove_one(l: &Leaving, progress: &Progress, dry_run: bool) -> Result<(), Removal> {
    let host = l.link.host.clone();
    let connect = Connect(RemovePhase::Connect);
    let prepare: Vec<&dyn Phase<Leaving, RemovePhase, anyhow::Error>> = match l.kind {
        Leaver::Controller => vec![&connect, &QuorumGate, &Drain, &LeaveEtcd],
        // No Node, no pods: it only leaves etcd.
        Leaver::EtcdHost => vec![&connect, &QuorumGate, &LeaveEtcd],
    };
    let procedure = Procedure::new(host.clone(), prepare);
    let walked = procedure.apply_or_plan(l, progress, dry_run).await;
    walked.map_err(Removal::Prepare)?;
    let steps = ResetSteps::default();
    let reset = Procedure::new(host, steps.phases::<Leaving, anyhow::Error>());
    let walked = reset.apply_or_plan(l, progress, dry_run).await;
    walked.map_err(Removal::Reset)?;
    if !dry_run {
        match l.node.get() {
            Some(node) => {
                delete_node(l).await.map_err(Removal::Other)?;
                progress.info(&l.link.host, &format!("removed; Node {node} deleted"));
            }
            None => progress.info(&l.link.host, "removed"),
        }
    }
    Ok(())
}

/// A controller gone for good: through a remaining controller, the quorum
/// gate and leaving etcd; then its Node is deleted. Not drained (its pods
/// are gone with it) and not reset (it cannot be reached).
async fn forget_one(l: &Leaving, progress: &Progress, dry_run: bool) -> Result<(), Removal> {
    let prepare: Vec<&dyn Phase<Leaving, RemovePhase, anyhow::Error>> =
        vec![&ConnectVia, &QuorumGate, &LeaveEtcd];
    let procedure = Procedure::new(l.link.host.clone(), prepare);
    let walked = procedure.apply_or_plan(l, progress, dry_run).await;
    walked.map_err(Removal::Prepare)?;
    if !dry_run {
        delete_node(l).await.map_err(Removal::Other)?;
        progress.info(
            &l.link.host,
            "forgotten without a reset (unreachable): wipe the machine before it runs again, or its kubelet registers its Node anew",
        );
    }
    Ok(())
}

/// Delete the leaving controller's Node, if it has one.
async fn delete_node(l: &Leaving) -> Result<()> {
    let Some(node) = l.node.get() else {
        return Ok(());
    };
    let nodes: Api<Node> = Api::all(l.client.clone());
    match nodes.delete(node, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("failed to delete Node {node}")));
        }
    }
    Ok(())
}

/// Open a session to a remaining controller, for an unreachable one.
struct ConnectVia;

impl Phase<Leaving, RemovePhase, anyhow::Error> for ConnectVia {
    fn key(&self) -> RemovePhase {
        RemovePhase::Connect
    }
    fn title(&self) -> &'static str {
        "open an SSH session to a remaining host of its kind (this one is unreachable)"
    }
    fn effect(&self) -> Effect {
        Effect::Observe
    }
    fn plan<'a>(&'a self, l: &'a Leaving) -> Planned<'a> {
        let line = format!(
            "unreachable: through {}",
            l.via.as_ref().map_or("?", |v| v.host.as_str())
        );
        async move { Ok(vec![line]) }.boxed()
    }
    fn run<'a>(&'a self, l: &'a Leaving, _: &'a Live) -> Ran<'a> {
        async move {
            let via = l
                .via
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("no remaining host to act through"))?;
            via.open().await?;
            Ok(format!("unreachable: through {}", via.host))
        }
        .map(with_causes)
        .boxed()
    }
}

type Planned<'a> = BoxFuture<'a, Result<Vec<String>>>;
type Ran<'a> = BoxFuture<'a, Result<String>>;

/// etcdctl on the leaving host (it has the binary and a client
/// certificate of the etcd CA), against `endpoints`.
async fn etcdctl(l: &Leaving, endpoints: &str, args: &[&str]) -> Result<String> {
    let version = &l.link.ctx.manifest.kubernetes_version;
    let cmd = super::etcdctl::command(version, endpoints, args);
    let out = l.etcd_session()?.output(&cmd).await?;
    // `endpoint health` exits 1 when a member is unhealthy, with the JSON.
    if out.exit_status != Some(0) && out.stdout.is_empty() {
        bail!(
            "etcdctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout_str())
}

struct QuorumGate;

impl Phase<Leaving, RemovePhase, anyhow::Error> for QuorumGate {
    fn key(&self) -> RemovePhase {
        RemovePhase::QuorumGate
    }
    fn title(&self) -> &'static str {
        "check that etcd keeps a healthy majority without this member"
    }
    fn effect(&self) -> Effect {
        Effect::Observe
    }
    fn plan<'a>(&'a self, _: &'a Leaving) -> Planned<'a> {
        async {
            Ok(vec![
                "count etcd's healthy members without this one".to_string(),
            ])
        }
        .boxed()
    }
    fn run<'a>(&'a self, l: &'a Leaving, _: &'a Live) -> Ran<'a> {
        async move {
            if l.holds_no_member() {
                find_node(l).await?;
                return Ok("etcd runs on its own hosts: this controller holds no member".into());
            }
            let address = &l.link.controller.address;
            let peer = super::etcdctl::peer_url(address);
            let local = super::etcdctl::LOCAL;
            let version = &l.link.ctx.manifest.kubernetes_version;
            let members = super::etcdctl::member_list(l.etcd_session()?, version, local).await?;
            let me = members.iter().find(|m| m.peer_urls.contains(&peer));
            let health: Vec<Health> = serde_json::from_str(
                &etcdctl(l, local, &["endpoint", "health", "--cluster", "-w", "json"]).await?,
            )
            .context("etcdctl endpoint health printed no JSON")?;
            let healthy = |m: &Member| {
                health
                    .iter()
                    .any(|h| h.health && m.client_urls.contains(&h.endpoint))
            };
            let gone: Vec<String> = l
                .left_before
                .iter()
                .chain([address])
                .map(|a| super::etcdctl::peer_url(a))
                .collect();
            let others: Vec<&Member> = members
                .iter()
                .filter(|m| !m.peer_urls.iter().any(|u| gone.contains(u)))
                .collect();
            let after = others.len();
            let healthy_after: Vec<&str> = others
                .iter()
                .filter(|m| healthy(m))
                .map(|m| m.name.as_str())
                .collect();
            let need = after / 2 + 1;
            if after == 0 {
                bail!("{address} is etcd's last member: etcd keeps at least one");
            }
            if healthy_after.len() < need {
                bail!(
                    "removing {address} leaves {after} etcd member(s) of which {} healthy ({}); a majority of {after} is {need}: start the stopped {}s first (`kubeup status` shows them), then run up again",
                    healthy_after.len(),
                    healthy_after.join(", "),
                    l.kind.what()
                );
            }
            if let Some(me) = me {
                let _ = l.member.set(me.id);
            }
            if l.kind == Leaver::Controller {
                find_node(l).await?;
            }
            Ok(format!(
                "{after} member(s) remain, {} healthy, majority {need}",
                healthy_after.len()
            ))
        }
        .map(with_causes)
        .boxed()
    }
}

struct Drain;

impl Phase<Leaving, RemovePhase, anyhow::Error> for Drain {
    fn key(&self) -> RemovePhase {
        RemovePhase::Drain
    }
    fn title(&self) -> &'static str {
        "cordon the Node and evict its pods"
    }
    fn plan<'a>(&'a self, l: &'a Leaving) -> Planned<'a> {
        let line = format!(
            "cordon Node {} and evict its pods (DaemonSets' stay)",
            l.node.get().map(String::as_str).unwrap_or("(none found)")
        );
        async move { Ok(vec![line]) }.boxed()
    }
    fn run<'a>(&'a self, l: &'a Leaving, _: &'a Live) -> Ran<'a> {
        async move {
            let Some(node) = l.node.get() else {
                return Ok("no Node".to_string());
            };
            let nodes: Api<Node> = Api::all(l.client.clone());
            nodes
                .patch(
                    node,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
                )
                .await?;
            let pods: Api<Pod> = Api::all(l.client.clone());
            let started = Instant::now();
            loop {
                let on = pods
                    .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                    .await?;
                let movable: Vec<&Pod> = on.items.iter().filter(|p| !daemon_or_mirror(p)).collect();
                if movable.is_empty() {
                    return Ok(format!("{node} drained"));
                }
                if started.elapsed() > Duration::from_secs(120) {
                    bail!("{} pod(s) still on {node} after 120s", movable.len());
                }
                for p in movable {
                    let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) else {
                        continue;
                    };
                    let api: Api<Pod> = Api::namespaced(l.client.clone(), ns);
                    // A PodDisruptionBudget may say "not now": try again.
                    let _ = api.evict(name, &EvictParams::default()).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        .map(with_causes)
        .boxed()
    }
}

fn daemon_or_mirror(p: &Pod) -> bool {
    let mirror = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let daemon = p
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet"));
    mirror || daemon
}

struct LeaveEtcd;

impl Phase<Leaving, RemovePhase, anyhow::Error> for LeaveEtcd {
    fn key(&self) -> RemovePhase {
        RemovePhase::LeaveEtcd
    }
    fn title(&self) -> &'static str {
        "remove this member from etcd, before its host is reset"
    }
    fn plan<'a>(&'a self, l: &'a Leaving) -> Planned<'a> {
        let line = format!(
            "remove etcd member {} (via {})",
            l.member
                .get()
                .map(|m| format!("{m:x}"))
                .unwrap_or_else(|| "(not a member)".into()),
            l.remaining.join(", ")
        );
        async move { Ok(vec![line]) }.boxed()
    }
    fn run<'a>(&'a self, l: &'a Leaving, _: &'a Live) -> Ran<'a> {
        async move {
            let Some(id) = l.member.get() else {
                return Ok("not a member".to_string());
            };
            let id = format!("{id:x}");
            let version = &l.link.ctx.manifest.kubernetes_version;
            let remove = super::etcdctl::command(
                version,
                &l.remaining.join(","),
                &["member", "remove", &id],
            );
            super::etcdctl::reconfigure(l.etcd_session()?, &remove, "member remove").await?;
            Ok(format!("member {id} removed"))
        }
        .map(with_causes)
        .boxed()
    }
}
