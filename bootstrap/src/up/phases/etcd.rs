//! Growing etcd safely: a controller without etcd data, in a cluster whose
//! other controllers have it, joins as a learner (added before its etcd
//! first starts, one controller at a time) and is promoted to a voting
//! member only once it has caught up with the leader (etcd refuses the
//! promotion before that; the phase retries). Both phases run on the new
//! controller itself, with its etcdctl and its etcd client certificate,
//! against the running members. A fresh cluster needs neither: its members
//! start together.

use anyhow::Result;
use futures::FutureExt;
use kubeup_provision::phase::{Live, Phase};

use super::{Plan, Run, UpPhase};
use crate::up::connect::with_causes;
use crate::up::run::UpRun;

/// The members that run now, as etcdctl's endpoints.
fn endpoints(run: &UpRun) -> Result<String> {
    Ok(run.running_members()?.join(","))
}

fn version(run: &UpRun) -> &str {
    &run.ctx().manifest.kubernetes_version
}

fn peer_url(run: &UpRun) -> String {
    crate::up::etcdctl::peer_url(&run.link.controller.address)
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
            UpPhase::Binaries,
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
            let endpoints = endpoints(run)?;
            crate::up::etcdctl::add_learner(
                run.session()?,
                version(run),
                &endpoints,
                &name,
                &peer_url(run),
            )
            .await
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
            let endpoints = endpoints(run)?;
            crate::up::etcdctl::promote_when_caught_up(
                run.session()?,
                version(run),
                &endpoints,
                &peer_url(run),
            )
            .await
        }
        .map(with_causes)
        .boxed()
    }
}
