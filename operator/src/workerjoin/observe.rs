//! Observe: everything a decision about a WorkerJoin looks at, read once
//! per reconcile (the Secret's shape, never its content; the Node; the
//! Cluster's facts; other WorkerJoins' claims; what the operator remembers).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};
use kubeup_crds::workerjoin::{WorkerJoinPhase as Phase, WorkerJoinStatus};
use kubeup_crds::{WorkerJoin, WorkerJoinCondition};

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::workerjoin::decide::{self, Observed, SecretState, owner_ref};
use crate::workerjoin::nodeclaim::{self, created};
use crate::workerjoin::specguard::{self, ClusterFacts};
use crate::workerjoin::{access, join, node};

/// What was observed, owned (the decision borrows it as [`Observed`]).
pub struct Observation {
    /// `<namespace>.<name>`: the memory key and Node owner value.
    pub key: String,
    /// The machine's address (spec), for messages.
    pub host: String,
    pub generation: i64,
    pub current: WorkerJoinStatus,
    pub secret: SecretState,
    /// The Secret's resourceVersion: a blocked join unblocks when it changes.
    pub secret_rv: Option<String>,
    pub node: Option<Node>,
    pub spec_problems: Vec<String>,
    pub node_conflict: Option<String>,
    pub conflict: Option<String>,
    pub blocked: bool,
    pub backoff_left: Option<Duration>,
}

impl Observation {
    /// Nothing read: the object alone (a WorkerJoin refused before any read).
    pub fn unread(wj: &WorkerJoin) -> Self {
        Self {
            key: owner_ref(&wj.namespace().unwrap_or_default(), &wj.name_any()),
            host: wj.spec.address.clone(),
            generation: wj.metadata.generation.unwrap_or(0),
            current: wj.status.clone().unwrap_or_default(),
            secret: SecretState::Missing,
            secret_rv: None,
            node: None,
            spec_problems: vec![],
            node_conflict: None,
            conflict: None,
            blocked: false,
            backoff_left: None,
        }
    }

    pub fn view<'a>(&'a self, wj: &'a WorkerJoin) -> Observed<'a> {
        Observed {
            generation: self.generation,
            spec: &wj.spec,
            status: &self.current,
            secret: self.secret.clone(),
            spec_problems: self.spec_problems.clone(),
            conflict: self.conflict.clone(),
            node_conflict: self.node_conflict.clone(),
            node: self.node.as_ref().map(node::node_view),
            blocked: self.blocked,
            backoff_left: self.backoff_left,
        }
    }
}

pub async fn observe(ctx: &Context, wj: &WorkerJoin) -> Result<Observation> {
    let ns = wj.namespace().unwrap_or_default();
    let key = owner_ref(&ns, &wj.name_any());
    let generation = wj.metadata.generation.unwrap_or(0);
    let current = wj.status.clone().unwrap_or_default();

    let (secret, secret_rv) = access::secret_state(&ctx.client, &ns, wj).await?;
    let node_name = decide::node_name(&wj.spec, &current, None);
    let node = match &node_name {
        Some(n) => Api::<Node>::all(ctx.client.clone())
            .get_opt(n)
            .await
            .map_err(Error::kube(format!("read Node {n}")))?,
        None => None,
    };
    let cluster = join::read_cluster(&ctx.client).await?;
    let facts = ClusterFacts::from_cluster(&cluster, ctx.settings.allow_loopback);
    let mine = resolve(&wj.spec.address, wj.spec.port).await;
    let spec_problems = spec_problems(wj, &facts, &mine);
    let node_conflict = node_name
        .as_deref()
        .and_then(|n| nodeclaim::check(ctx, wj, n, node.as_ref()));
    let me = (created(wj), format!("{ns}/{}", wj.name_any()));
    let conflict = decide::conflicting_owner((&me.0, &me.1), &claims(ctx, wj, &mine).await);

    let mut mem = ctx.memory(&key);
    // A refusal is decided again on every reconcile from the object and
    // the cluster, so it never blocks: a duplicate may own the machine once
    // the other WorkerJoin is gone, and a spec that conflicts with the
    // Cluster (a worker's address now listed as a controller) joins again
    // once the Cluster is fixed.
    let refused =
        kubeup_crds::conditions::find(&current.conditions, WorkerJoinCondition::Ready.as_str())
            .is_some_and(|c| decide::REFUSALS.iter().any(|r| r.as_str() == c.reason));
    let blocked = current.phase == Phase::Failed
        && current.observed_generation == Some(generation)
        && current.last_error.is_some()
        && !refused
        && match &mem.blocked_secret_rv {
            Some(rv) => Some(rv) == secret_rv.as_ref(),
            None => {
                // After a restart: block, and remember the Secret as it is.
                mem.blocked_secret_rv = secret_rv.clone();
                ctx.set_memory(&key, mem.clone());
                true
            }
        };
    let backoff_left = if current.observed_generation == Some(generation) {
        mem.next_attempt
            .map(|t| t.saturating_duration_since(Instant::now()))
    } else {
        None
    };
    Ok(Observation {
        key,
        host: wj.spec.address.clone(),
        generation,
        current,
        secret,
        secret_rv,
        node,
        spec_problems,
        node_conflict,
        conflict,
        blocked,
        backoff_left,
    })
}

/// Problems of the spec against the cluster, including what a DNS-name
/// address resolves to now.
fn spec_problems(wj: &WorkerJoin, facts: &ClusterFacts, resolved: &[IpAddr]) -> Vec<String> {
    let mut out = specguard::problems(&wj.spec, facts);
    if wj.spec.address.parse::<IpAddr>().is_err() {
        out.extend(resolved.iter().filter_map(|ip| {
            facts
                .forbidden_ip(*ip)
                .map(|why| format!("spec.address: {} resolves to {ip}: {why}", wj.spec.address))
        }));
    }
    out
}

/// The claims of other WorkerJoins on the same SSH endpoint (address and
/// port: machines behind one NAT address differ by port), for the
/// duplicate check. Addresses are compared as the machines they name: an
/// IP and a DNS name that resolves to it are one machine.
async fn claims(ctx: &Context, wj: &WorkerJoin, mine: &[IpAddr]) -> Vec<(String, String)> {
    let me = wj.uid();
    let others: Vec<_> = ctx
        .store
        .state()
        .into_iter()
        .filter(|o| o.uid() != me && o.spec.port == wj.spec.port)
        .collect();
    let mut out = vec![];
    for o in others {
        let same = o.spec.address.eq_ignore_ascii_case(&wj.spec.address) || {
            let theirs = resolve(&o.spec.address, o.spec.port).await;
            theirs.iter().any(|ip| mine.contains(ip))
        };
        if same {
            out.push((
                created(&o),
                format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
            ));
        }
    }
    out
}

/// The IPs an address names: itself when it is one, else what it resolves
/// to now (nothing when it does not resolve within two seconds).
async fn resolve(address: &str, port: u16) -> Vec<IpAddr> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return vec![ip];
    }
    let lookup = tokio::net::lookup_host((address, port));
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        _ => vec![],
    }
}
