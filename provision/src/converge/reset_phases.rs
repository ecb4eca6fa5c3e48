//! Reset as phases of the engine, for `kubeup reset` and the operator's
//! cleanup of a worker: stop the units → remove what the installed list
//! names → clean the network up ([`super::reset_host`] runs the same steps
//! without progress). Each needs nothing but the host's session, which a
//! flow's context lends through [`OnHost`] (a bare [`Session`] is one).
//! Connecting is the flow's own phase, keyed [`ResetPhase::Connect`]: the
//! CLI and the operator reach hosts differently.

use std::sync::{Mutex, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::ConvergeError;
use super::reset::{clean_network, installed_list, remove_installed, stop_units};
use crate::hostplan::{Unit, layout};
use crate::phase::{Live, Phase, PhaseKey};
use crate::ssh::Session;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetPhase {
    Connect,
    StopUnits,
    RemoveFiles,
    CleanNetwork,
}

impl PhaseKey for ResetPhase {
    fn name(self) -> &'static str {
        match self {
            ResetPhase::Connect => "connect",
            ResetPhase::StopUnits => "stop units",
            ResetPhase::RemoveFiles => "remove files",
            ResetPhase::CleanNetwork => "clean network",
        }
    }
}

/// The host's session, from a flow's context. An error when the flow has
/// none yet: its connect phase comes first, so only a flow listing its
/// phases wrongly sees it.
pub trait OnHost {
    fn session(&self) -> Result<&Session, ConvergeError>;
}

impl OnHost for Session {
    fn session(&self) -> Result<&Session, ConvergeError> {
        Ok(self)
    }
}

/// The three steps after connecting; `remove` keeps what it removed.
#[derive(Default)]
pub struct ResetSteps {
    pub stop: StopUnits,
    pub remove: RemoveFiles,
    pub network: CleanNetwork,
}

impl ResetSteps {
    /// In order, for a [`crate::phase::Procedure`] after the flow's connect.
    pub fn phases<C, E>(&self) -> Vec<&dyn Phase<C, ResetPhase, E>>
    where
        C: OnHost + Sync + ?Sized,
        E: From<ConvergeError> + Send,
    {
        vec![&self.stop, &self.remove, &self.network]
    }
}

#[derive(Default)]
pub struct StopUnits;

#[derive(Default)]
pub struct RemoveFiles {
    removed: Mutex<Vec<String>>,
}

impl RemoveFiles {
    /// The paths a run removed.
    pub fn removed(&self) -> Vec<String> {
        self.removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Default)]
pub struct CleanNetwork;

impl<C, E> Phase<C, ResetPhase, E> for StopUnits
where
    C: OnHost + Sync + ?Sized,
    E: From<ConvergeError> + Send,
{
    fn key(&self) -> ResetPhase {
        ResetPhase::StopUnits
    }
    fn title(&self) -> &'static str {
        "stop and disable kubeup's units, end the containers"
    }
    fn plan<'a>(&'a self, _: &'a C) -> BoxFuture<'a, Result<Vec<String>, E>> {
        let units: Vec<&str> = Unit::STOP_ORDER.iter().map(|u| u.name()).collect();
        let line = format!(
            "stop and disable {} (those present), end the containers, unmount their mounts",
            units.join(", ")
        );
        async move { Ok(vec![line]) }.boxed()
    }
    fn run<'a>(&'a self, ctx: &'a C, _: &'a Live) -> BoxFuture<'a, Result<String, E>> {
        async move {
            stop_units(ctx.session()?).await?;
            Ok(String::new())
        }
        .boxed()
    }
}

impl<C, E> Phase<C, ResetPhase, E> for RemoveFiles
where
    C: OnHost + Sync + ?Sized,
    E: From<ConvergeError> + Send,
{
    fn key(&self) -> ResetPhase {
        ResetPhase::RemoveFiles
    }
    fn title(&self) -> &'static str {
        "remove what kubeup installed"
    }
    fn plan<'a>(&'a self, ctx: &'a C) -> BoxFuture<'a, Result<Vec<String>, E>> {
        async move {
            let listed = installed_list(ctx.session()?).await?;
            let dirs = listed.iter().filter(|l| l.ends_with('/')).count();
            let files = listed.len().saturating_sub(dirs);
            Ok(vec![format!(
                "remove the {files} files and {dirs} claimed directories of {}, then {} and {}",
                layout::INSTALLED_LIST,
                layout::OPT,
                layout::STATE
            )])
        }
        .boxed()
    }
    fn run<'a>(&'a self, ctx: &'a C, _: &'a Live) -> BoxFuture<'a, Result<String, E>> {
        async move {
            let removed = remove_installed(ctx.session()?).await?;
            let detail = format!("{} paths removed", removed.len());
            *self.removed.lock().unwrap_or_else(PoisonError::into_inner) = removed;
            Ok(detail)
        }
        .boxed()
    }
}

impl<C, E> Phase<C, ResetPhase, E> for CleanNetwork
where
    C: OnHost + Sync + ?Sized,
    E: From<ConvergeError> + Send,
{
    fn key(&self) -> ResetPhase {
        ResetPhase::CleanNetwork
    }
    fn title(&self) -> &'static str {
        "remove the cluster's iptables rules and links"
    }
    fn plan<'a>(&'a self, _: &'a C) -> BoxFuture<'a, Result<Vec<String>, E>> {
        let line = "remove kube-proxy's and flannel's iptables rules, the cni0 and flannel.1 links and the pods' ends on cni0".to_string();
        async move { Ok(vec![line]) }.boxed()
    }
    fn run<'a>(&'a self, ctx: &'a C, _: &'a Live) -> BoxFuture<'a, Result<String, E>> {
        async move {
            clean_network(ctx.session()?).await?;
            Ok(String::new())
        }
        .boxed()
    }
}
