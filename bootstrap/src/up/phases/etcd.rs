//! Growing etcd safely: a controller without etcd data, in a cluster whose
//! other controllers have it, joins as a learner (added before its etcd
//! first starts, one controller at a time) and is promoted to a voting
//! member only once it has caught up with the leader (etcd refuses the
//! promotion before that; the phase retries). Both phases run on the new
//! controller itself, with its etcdctl and its etcd client certificate,
//! against the running members. A fresh cluster needs neither: its members
//! start together.

use std::time::{Duration, Instant};

use crate::up::etcdctl::{Member, MemberList};
use anyhow::{Context as _, Result, bail};
use futures::FutureExt;
use kubeup_provision::phase::{Live, Phase};
use kubeup_provision::ssh::Command;

use super::{Plan, Run, UpPhase};
use crate::up::connect::with_causes;
use crate::up::run::UpRun;

/// How long a learner may take to catch up before `up` gives up.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(120);

/// `etcdctl …` on this controller against the members that run now.
fn etcdctl(run: &UpRun, args: &[&str]) -> Result<Command> {
    let endpoints = run.running_members()?.join(",");
    Ok(crate::up::etcdctl::command(
        &run.ctx().manifest.kubernetes_version,
        &endpoints,
        args,
    ))
}

async fn members(run: &UpRun) -> Result<Vec<Member>> {
    let out = run
        .session()?
        .output(&etcdctl(run, &["member", "list", "-w", "json"])?)
        .await?;
    if out.exit_status != Some(0) {
        bail!(
            "etcdctl member list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let list: MemberList =
        serde_json::from_slice(&out.stdout).context("etcdctl member list printed no JSON")?;
    Ok(list.members)
}

fn peer_url(run: &UpRun) -> String {
    format!("https://{}:2380", run.link.controller.address)
}

pub(super) struct EtcdJoin;

impl Phase<UpRun, UpPhase, anyhow::Error> for EtcdJoin {
    fn key(&self) -> UpPhase {
        UpPhase::EtcdJoin
    }
    fn title(&self) -> &'static str {
        "add this controller to the running etcd as a learner"
    }
    /// It needs etcdctl (the bundle), the etcd client certificate and the
    /// etcd CA (a configuration file).
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[
            UpPhase::Artifacts,
            UpPhase::Certificates,
            UpPhase::Configuration,
        ])
    }
    fn needed(&self, run: &UpRun, resumed_past: bool) -> bool {
        !resumed_past && run.joins_running_etcd()
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        let line = run.plan().map(|p| {
            format!(
                "add etcd member {} ({}) as a learner of {}",
                p.node_name,
                peer_url(run),
                run.running_members().unwrap_or_default().join(", ")
            )
        });
        async move { Ok(vec![line?]) }.map(with_causes).boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let name = run.plan()?.node_name.clone();
            let url = peer_url(run);
            let existing = members(run).await?;
            if let Some(m) = existing.iter().find(|m| m.peer_urls.contains(&url)) {
                if m.name == name || m.name.is_empty() {
                    // Added by an earlier run that stopped before its start.
                    return Ok(format!("already a member ({:x})", m.id));
                }
                bail!(
                    "{url} is already the etcd member {:?} ({:x}), not {name:?}: remove that member first (`etcdctl member remove {:x}`) or give this controller its name",
                    m.name,
                    m.id,
                    m.id
                );
            }
            if let Some(l) = existing.iter().find(|m| m.is_learner) {
                bail!(
                    "etcd member {:?} is still a learner: members join one at a time; run `kubeup up` again once it is promoted",
                    l.name
                );
            }
            let add = etcdctl(
                run,
                &["member", "add", &name, &format!("--peer-urls={url}"), "--learner"],
            )?;
            crate::up::etcdctl::reconfigure(run.session()?, &add, "member add").await?;
            Ok(format!("learner {name}"))
        }
        .map(with_causes)
        .boxed()
    }
}

pub(super) struct EtcdPromote;

impl Phase<UpRun, UpPhase, anyhow::Error> for EtcdPromote {
    fn key(&self) -> UpPhase {
        UpPhase::EtcdPromote
    }
    fn title(&self) -> &'static str {
        "promote the learner to a voting member once it caught up"
    }
    fn after(&self) -> Option<&'static [UpPhase]> {
        Some(&[UpPhase::Units])
    }
    fn needed(&self, run: &UpRun, resumed_past: bool) -> bool {
        !resumed_past && run.joins_running_etcd()
    }
    fn plan<'a>(&'a self, run: &'a UpRun) -> Plan<'a> {
        let line = format!(
            "wait until the learner at {} caught up with the leader, then promote it",
            peer_url(run)
        );
        async move { Ok(vec![line]) }.map(with_causes).boxed()
    }
    fn run<'a>(&'a self, run: &'a UpRun, _: &'a Live) -> Run<'a> {
        async move {
            let url = peer_url(run);
            let started = Instant::now();
            let mut last = String::new();
            while started.elapsed() < PROMOTE_TIMEOUT {
                let me = members(run)
                    .await?
                    .into_iter()
                    .find(|m| m.peer_urls.contains(&url))
                    .with_context(|| format!("{url} is no etcd member: was it removed?"))?;
                if !me.is_learner {
                    return Ok(format!(
                        "voting member after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ));
                }
                let out = run
                    .session()?
                    .output(&etcdctl(run, &["member", "promote", &format!("{:x}", me.id)])?)
                    .await?;
                if out.exit_status == Some(0) {
                    continue;
                }
                // "can only promote a learner member which is in sync with
                // leader": not caught up yet.
                last = String::from_utf8_lossy(&out.stderr).trim().to_string();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            bail!(
                "the learner at {url} did not catch up within {PROMOTE_TIMEOUT:?} (last: {last}); `kubeup status` shows its raft index"
            )
        }
        .map(with_causes)
        .boxed()
    }
}
