//! Connecting to the controller as a phase, for `up`, `plan` and `reset`:
//! the session it opens stays in the flow's [`Link`] for the phases after it.

use std::sync::{Arc, OnceLock};

use anyhow::Result;
use futures::FutureExt;
use futures::future::BoxFuture;
use kubeup_provision::converge::ConvergeError;
use kubeup_provision::converge::reset_phases::OnHost;
use kubeup_provision::phase::{Effect, Live, Phase, PhaseKey};
use kubeup_provision::ssh::Session;

use kubeup_crds::cluster::ControllerHost;

use super::ControllerContext;

/// One controller and, once connected, its session.
pub struct Link {
    pub ctx: Arc<ControllerContext>,
    /// The controller's place in `spec.controllers`.
    pub index: usize,
    pub controller: ControllerHost,
    /// How progress and errors name it: its name, or its address.
    pub host: String,
    session: OnceLock<Session>,
}

impl Link {
    pub fn new(ctx: Arc<ControllerContext>, index: usize) -> Result<Self> {
        let controller = ctx
            .controllers()
            .get(index)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("cluster.yaml names no controller {index}"))?;
        Ok(Self {
            index,
            ..Self::for_host(ctx, controller)
        })
    }

    /// The link to `controller`; one cluster.yaml no longer lists (being
    /// removed) keeps no index.
    pub fn for_host(ctx: Arc<ControllerContext>, controller: ControllerHost) -> Self {
        Self {
            host: controller
                .name
                .clone()
                .unwrap_or_else(|| controller.address.clone()),
            ctx,
            index: usize::MAX,
            controller,
            session: OnceLock::new(),
        }
    }

    /// Open the session (the host key checked against known_hosts), unless
    /// it is open already; its host key's fingerprint.
    pub async fn open(&self) -> Result<String> {
        if let Some(open) = self.session.get() {
            return Ok(open.host_key_fingerprint().await.unwrap_or_default());
        }
        let session = self.ctx.connect(&self.controller).await?;
        let fingerprint = session.host_key_fingerprint().await.unwrap_or_default();
        if let Err(extra) = self.session.set(session) {
            extra.close().await;
        }
        Ok(fingerprint)
    }

    /// End the session, if one was opened (every exit path of a command).
    pub async fn close(&mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }
}

/// The session the connect phase opened. Every phase after it in a flow
/// has it; the error is for a flow that lists a phase before connecting.
impl OnHost for Link {
    fn session(&self) -> Result<&Session, ConvergeError> {
        self.session.get().ok_or_else(|| ConvergeError::Host {
            host: self.host.clone(),
            step: "connect",
            message: "no session yet: the flow lists this phase before connecting".into(),
        })
    }
}

impl AsRef<Link> for Link {
    fn as_ref(&self) -> &Link {
        self
    }
}

/// Open the SSH session, the host key checked against known_hosts.
pub struct Connect<K>(pub K);

impl<K: PhaseKey, C: AsRef<Link> + Sync> Phase<C, K, anyhow::Error> for Connect<K> {
    fn key(&self) -> K {
        self.0
    }
    fn title(&self) -> &'static str {
        "open the SSH session"
    }
    fn effect(&self) -> Effect {
        Effect::Observe
    }
    fn plan<'a>(&'a self, _: &'a C) -> BoxFuture<'a, Result<Vec<String>>> {
        async { Ok(vec!["open the SSH session".to_string()]) }
            .map(with_causes)
            .boxed()
    }
    fn run<'a>(&'a self, ctx: &'a C, _: &'a Live) -> BoxFuture<'a, Result<String>> {
        async move { ctx.as_ref().open().await }
            .map(with_causes)
            .boxed()
    }
}

/// A phase's error with its causes in its message: progress shows the
/// error's `to_string()`, which for anyhow is only the outermost context
/// ("failed to connect to …" without "connection refused").
pub fn with_causes<T>(result: Result<T>) -> Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e:#}"))
}
