//! What every reconcile shares: the client, the Event recorder, metrics,
//! the bundle, settings, and per-object memory (backoff deadlines, blocked
//! permanent failures) that complements what status records.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kubeup_crds::WorkerJoin;
use kubeup_provision::ssh::SshOptions;

use crate::bundle::Bundles;
use crate::metrics::Metrics;

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
    pub ssh: SshOptions,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: "kubeup-system".into(),
            csr_timeout: Duration::from_secs(60),
            node_wait: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(120),
            ssh: SshOptions {
                connect_timeout: Duration::from_secs(15),
                reconnect_attempts: 2,
                ..SshOptions::default()
            },
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
        }
    }

    pub fn memory(&self, key: &str) -> Memory {
        self.memory
            .lock()
            .expect("not poisoned")
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub fn set_memory(&self, key: &str, m: Memory) {
        self.memory
            .lock()
            .expect("not poisoned")
            .insert(key.to_string(), m);
    }

    pub fn forget(&self, key: &str) {
        self.memory.lock().expect("not poisoned").remove(key);
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
        let mut note = note;
        if note.len() > 1000 {
            note.truncate(1000);
        }
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &wj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "failed to publish an Event");
        }
    }
}
