//! What every reconcile shares: the client, the Event recorder, metrics,
//! the bundle, settings, and per-object memory (backoff deadlines, blocked
//! permanent failures) that complements what status records.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kubeup_crds::WorkerJoin;
use kubeup_provision::ssh::SshOptions;

use crate::runtime::bundle::Bundles;
use crate::runtime::metrics::Metrics;

/// The one field manager for every write the operator makes.
pub const FIELD_MANAGER: &str = "kubeup-operator";

/// Settings (from flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace the operator runs in: where it reads `kube-root-ca.crt`.
    pub namespace: String,
    pub csr_timeout: Duration,
    /// How long one reconcile waits for the Node before requeueing.
    pub node_wait: Duration,
    pub drain_timeout: Duration,
    /// How long one phase of a join may run before it fails (transient):
    /// a stalled host or connection ends in a retry, not a hung join.
    pub phase_timeout: Duration,
    pub ssh: SshOptions,
    /// Namespaces whose WorkerJoins (and SSH Secrets) the operator serves;
    /// empty: its own only. A WorkerJoin elsewhere is refused: its author
    /// could otherwise name Secrets the operator may not read for them.
    pub namespaces: Vec<String>,
    /// Tests only (no flag sets it): WorkerJoins may name loopback, where
    /// the test harness's sshd listens.
    pub allow_loopback: bool,
}

impl Settings {
    /// The namespaces served: the configured ones, else the operator's own.
    pub fn served_namespaces(&self) -> Vec<String> {
        if self.namespaces.is_empty() {
            vec![self.namespace.clone()]
        } else {
            self.namespaces.clone()
        }
    }

    pub fn serves(&self, namespace: &str) -> bool {
        self.served_namespaces().iter().any(|n| n == namespace)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: "kubeup-system".into(),
            csr_timeout: Duration::from_secs(60),
            node_wait: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(120),
            phase_timeout: Duration::from_secs(300),
            ssh: SshOptions {
                connect_timeout: Duration::from_secs(15),
                reconnect_attempts: 2,
                ..SshOptions::default()
            },
            namespaces: vec![],
            allow_loopback: false,
        }
    }
}

/// What the operator remembers about one object between reconciles.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// No new attempt before this (transient failure backoff).
    pub next_attempt: Option<Instant>,
    /// A permanent failure is recorded; the Secret's resourceVersion then.
    pub blocked_secret_rv: Option<String>,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub bundles: Bundles,
    pub settings: Settings,
    pub store: Store<WorkerJoin>,
    memory: Mutex<HashMap<String, Memory>>,
    /// The operator's own user name as the apiserver authenticates it
    /// (asked once): the only `spec.username` of a kubelet client CSR it
    /// approves.
    identity: tokio::sync::OnceCell<String>,
}

impl Context {
    pub fn new(
        client: Client,
        bundles: Bundles,
        settings: Settings,
        store: Store<WorkerJoin>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Metrics::new(),
            bundles,
            settings,
            store,
            memory: Mutex::default(),
            identity: tokio::sync::OnceCell::new(),
        }
    }

    /// Who the apiserver says this operator is (a SelfSubjectReview).
    pub async fn username(&self) -> crate::Result<String> {
        self.identity
            .get_or_try_init(|| crate::workerjoin::csr::whoami(&self.client))
            .await
            .cloned()
            .map_err(Into::into)
    }

    pub fn memory(&self, key: &str) -> Memory {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub fn set_memory(&self, key: &str, m: Memory) {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_string(), m);
    }

    pub fn forget(&self, key: &str) {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Publish an Event on the WorkerJoin; failures to publish are logged,
    /// never fatal.
    pub async fn event(
        &self,
        wj: &WorkerJoin,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish(wj.object_ref(&()), None, warning, reason, action, note)
            .await;
    }

    /// Publish an Event on any object (the one place Events are made):
    /// notes cut to what an Event holds, failures logged, never fatal.
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        // Events hold at most 1 kB of note; cut on a character boundary.
        let note = kubeup_provision::text::truncate_chars(&note, 1000);
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&ev, &regarding).await {
            tracing::warn!(error = %e, reason, "failed to publish an Event");
        }
    }
}
