//! The operator's known_hosts: host keys first seen under `AcceptNew` (the
//! machine's and its bastion's), kept in the ConfigMap `kubeup-known-hosts`
//! in the operator's namespace. Not in the WorkerJoin's status: anyone who
//! may patch a status could replace the recorded key with an attacker's.
//! The chart's admission policy lets only the operator write this
//! ConfigMap.
//!
//! One data entry per WorkerJoin, keyed by its uid (a WorkerJoin made again
//! trusts afresh, as the re-trust advice says), written by server-side apply
//! with a field manager of that uid: joins running at once never overwrite
//! one another's entries, and dropping an entry removes only that one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::{Deserialize, Serialize};

pub const CONFIGMAP: &str = "kubeup-known-hosts";

/// What can go wrong with the record of host keys.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// An entry that cannot be read: never taken as "nothing recorded"
    /// (that would trust whatever key answers next).
    #[error(
        "known host keys: the entry {uid} of ConfigMap {namespace}/{CONFIGMAP} cannot be read ({source}); remove that entry to trust the machine afresh"
    )]
    Unreadable {
        uid: String,
        namespace: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("known host keys: encode the record: {0}")]
    Encode(#[source] serde_json::Error),
}

impl KnownHostsError {
    /// Stable PascalCase reason for Events, conditions and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            KnownHostsError::Kube { .. } => "KubeApiError",
            KnownHostsError::Unreadable { .. } | KnownHostsError::Encode(_) => {
                "KnownHostsUnreadable"
            }
        }
    }

    /// An unreadable record waits for a person; the API may answer later.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, KnownHostsError::Kube { .. })
    }

    fn kube(action: String) -> impl FnOnce(kube::Error) -> KnownHostsError {
        move |source| KnownHostsError::Kube { action, source }
    }
}

type Result<T, E = KnownHostsError> = std::result::Result<T, E>;

/// The keys recorded for one WorkerJoin (OpenSSH public key lines).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<String>,
}

impl Record {
    pub fn is_empty(&self) -> bool {
        self.target.is_none() && self.bastion.is_none()
    }
}

fn api(client: &kube::Client, namespace: &str) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), namespace)
}

fn manager(uid: &str) -> String {
    // Field managers are at most 128 characters; a uid is 36.
    format!("kubeup-known-hosts-{uid}")
}

/// The record of the WorkerJoin `uid`, if any. An entry that cannot be
/// read is an error, never "nothing recorded" (that would be a new first
/// use).
pub async fn load(client: &kube::Client, namespace: &str, uid: &str) -> Result<Option<Record>> {
    let cm = api(client, namespace)
        .get_opt(CONFIGMAP)
        .await
        .map_err(KnownHostsError::kube(format!(
            "read ConfigMap {namespace}/{CONFIGMAP}"
        )))?;
    let Some(text) = cm.and_then(|c| c.data).and_then(|mut d| d.remove(uid)) else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| KnownHostsError::Unreadable {
            uid: uid.to_string(),
            namespace: namespace.to_string(),
            source,
        })
}

/// Record the keys of the WorkerJoin `uid`.
pub async fn save(
    client: &kube::Client,
    namespace: &str,
    uid: &str,
    record: &Record,
) -> Result<()> {
    let text = serde_json::to_string(record).map_err(KnownHostsError::Encode)?;
    apply(
        client,
        namespace,
        uid,
        BTreeMap::from([(uid.to_string(), text)]),
    )
    .await
}

/// Drop the entry of the WorkerJoin `uid` (it is gone).
pub async fn forget(client: &kube::Client, namespace: &str, uid: &str) -> Result<()> {
    apply(client, namespace, uid, BTreeMap::new()).await
}

async fn apply(
    client: &kube::Client,
    namespace: &str,
    uid: &str,
    data: BTreeMap<String, String>,
) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": namespace},
        "data": data,
    });
    api(client, namespace)
        .patch(
            CONFIGMAP,
            &PatchParams::apply(&manager(uid)).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(KnownHostsError::kube(format!(
            "record host keys in ConfigMap {namespace}/{CONFIGMAP}"
        )))?;
    Ok(())
}
