//! The phases of `kubeup up` and `kubeup plan`: one list ([`up_phases`]),
//! walked by the engine for real (`up`) or as a dry run (`plan`, which
//! prints each phase's [`Phase::plan`] and changes nothing). Each phase
//! looks before it acts, so a converged host sees no write and no restart.

mod cluster;
mod etcd;
mod host;

use anyhow::Result;
use futures::future::BoxFuture;
use kubeup_provision::phase::{Phase, PhaseKey};

use super::connect::Connect;
use super::run::UpRun;
use cluster::{AddOns, ControlPlaneReady, NodeReady, OperatorLeading};
use etcd::{EtcdJoin, EtcdPromote};
use host::{Artifacts, Certificates, Configuration, Images, Preflight, Units};
pub(in crate::up) use host::{RENEW_DAYS, would};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpPhase {
    Connect,
    Preflight,
    Binaries,
    Artifacts,
    WorkerBundle,
    Certificates,
    Configuration,
    EtcdJoin,
    Units,
    EtcdPromote,
    Images,
    ControlPlaneReady,
    NodeReady,
    AddOns,
    OperatorLeading,
}

/// The names JSON progress, `hack/bench-up.sh` and the README show.
impl PhaseKey for UpPhase {
    fn name(self) -> &'static str {
        match self {
            UpPhase::Connect => "connect",
            UpPhase::Preflight => "preflight",
            UpPhase::Binaries => "binaries",
            UpPhase::Artifacts => "artifacts",
            UpPhase::WorkerBundle => "worker bundle",
            UpPhase::Certificates => "certificates",
            UpPhase::Configuration => "configuration",
            UpPhase::EtcdJoin => "etcd join",
            UpPhase::Units => "units",
            UpPhase::EtcdPromote => "etcd promote",
            UpPhase::Images => "images",
            UpPhase::ControlPlaneReady => "control plane ready",
            UpPhase::NodeReady => "node ready",
            UpPhase::AddOns => "cluster add-ons",
            UpPhase::OperatorLeading => "operator leading",
        }
    }
}

pub type UpStep = dyn Phase<UpRun, UpPhase, anyhow::Error>;

/// `up`, in order. A phase starts once the ones its `after` names are done
/// (by default the one before), so independent work overlaps:
///
/// | phase | after | |
/// |---|---|---|
/// | connect, preflight | | look (stage 1: every controller at once) |
/// | binaries | preflight | the control plane's (etcd, hyperkube) |
/// | artifacts | binaries | what the controller's node runs |
/// | worker bundle | artifacts | what the operator hands on to workers |
/// | certificates, configuration | preflight | beside the uploads |
/// | etcd join | binaries, certificates, configuration | joining a running etcd only |
/// | units | the same and etcd join | etcd and the apiserver start while the bundle streams |
/// | etcd promote | units | joining only: learner → voter |
/// | images | artifacts, units | containerd and kube-proxy start, images imported |
/// | control plane ready | units, etcd promote | `/readyz`, then the controllers |
/// | cluster add-ons | control plane ready | the first controller only |
/// | node ready | images, control plane ready | the kubelet |
/// | operator leading | | once, through the first controller (stage 3) |
///
/// Stage 2 is every controller converging at once (etcd's members start
/// together), or one at a time when they join a running etcd.
pub fn up_phases() -> Vec<&'static UpStep> {
    vec![
        &Connect(UpPhase::Connect),
        &Preflight,
        &Artifacts(UpPhase::Binaries),
        &Artifacts(UpPhase::Artifacts),
        &Artifacts(UpPhase::WorkerBundle),
        &Certificates,
        &Configuration,
        &EtcdJoin,
        &Units,
        &EtcdPromote,
        &Images,
        &ControlPlaneReady,
        &AddOns,
        &NodeReady,
        &OperatorLeading,
    ]
}

/// Where each stage ends in [`up_phases`]: look, converge, cluster.
pub const STAGES: [UpPhase; 3] = [
    UpPhase::Preflight,
    UpPhase::NodeReady,
    UpPhase::OperatorLeading,
];

/// The phases of stage `n` of [`STAGES`].
pub fn stage(n: usize) -> Vec<&'static UpStep> {
    let all = up_phases();
    let end = |k: Option<&UpPhase>| {
        k.and_then(|k| all.iter().position(|p| p.key() == *k))
            .map_or(0, |i| i + 1)
    };
    let from = if n == 0 { 0 } else { end(STAGES.get(n - 1)) };
    let to = end(STAGES.get(n));
    all.get(from..to).map(<[_]>::to_vec).unwrap_or_default()
}

/// What phases return, boxed for the engine.
type Plan<'a> = BoxFuture<'a, Result<Vec<String>>>;
type Run<'a> = BoxFuture<'a, Result<String>>;

#[cfg(test)]
mod tests {
    use super::*;
    use kubeup_provision::converge::Changes;
    use kubeup_provision::phase::Effect;

    fn keys() -> Vec<UpPhase> {
        up_phases().iter().map(|p| p.key()).collect()
    }

    #[test]
    fn the_list_is_up_in_order_each_phase_once() {
        let names: Vec<&str> = keys().iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "connect",
                "preflight",
                "binaries",
                "artifacts",
                "worker bundle",
                "certificates",
                "configuration",
                "etcd join",
                "units",
                "etcd promote",
                "images",
                "control plane ready",
                "cluster add-ons",
                "node ready",
                "operator leading",
            ]
        );
    }

    #[test]
    fn the_stages_cover_the_list_once_in_order() {
        let staged: Vec<UpPhase> = (0..STAGES.len()).flat_map(stage).map(|p| p.key()).collect();
        assert_eq!(staged, keys());
        assert_eq!(
            stage(0).iter().map(|p| p.key()).collect::<Vec<_>>(),
            [UpPhase::Connect, UpPhase::Preflight]
        );
    }

    /// The engine waits only for phases listed before (a later one would
    /// never be done first): no phase may name itself or one after it.
    #[test]
    fn a_phase_waits_only_for_phases_listed_before_it() {
        let keys = keys();
        for (i, phase) in up_phases().iter().enumerate() {
            for dep in phase.after().unwrap_or_default() {
                let at = keys.iter().position(|k| k == dep).unwrap();
                assert!(at < i, "{:?} waits for {dep:?}", phase.key());
            }
        }
    }

    /// A dry run runs the phases that only look: exactly connect and
    /// preflight, so `plan` never reaches a change.
    #[test]
    fn only_connect_and_preflight_run_in_a_dry_run() {
        let observing: Vec<UpPhase> = up_phases()
            .iter()
            .filter(|p| p.effect() == Effect::Observe)
            .map(|p| p.key())
            .collect();
        assert_eq!(observing, [UpPhase::Connect, UpPhase::Preflight]);
    }

    #[test]
    fn a_dry_run_line_says_what_would_change_or_that_nothing_would() {
        let c = Changes {
            uploaded: vec!["a".into(), "b".into()],
            issued: vec!["apiserver".into()],
            ..Changes::default()
        };
        assert_eq!(host::would(&c, "-"), ["upload 2 files", "issue apiserver"]);
        assert_eq!(host::would(&Changes::default(), "in place"), ["in place"]);
    }
}
