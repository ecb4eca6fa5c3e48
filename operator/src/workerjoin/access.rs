//! Reading the SSH Secret and connecting to a WorkerJoin's machine.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::Api;
use kubeup_crds::host::Reachable;
use kubeup_crds::{HostKeyPolicy, WorkerJoin};
use kubeup_provision::ssh::{
    Auth, MemoryHostKeyStore, Secret, Session, SshError, SshOptions, SshTarget,
};

use crate::workerjoin::decide::{SSH_AUTH_TYPE, SSH_PRIVATE_KEY, SecretState};
use crate::workerjoin::knownhosts::{self, KnownHostsError};

/// What can stop the operator from reaching a machine. None carries key
/// material: a Secret is named, never shown, and SSH errors are secret-free
/// by construction.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name}: {reason}")]
    Secret {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("{host}: {source}")]
    Ssh {
        host: String,
        #[source]
        source: SshError,
    },
    #[error(transparent)]
    KnownHosts(#[from] KnownHostsError),
}

impl AccessError {
    /// Stable PascalCase reason for Events, conditions and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            AccessError::Kube { .. } => "KubeApiError",
            AccessError::Secret { .. } => "SecretInvalid",
            AccessError::Ssh { source, .. } => source.reason(),
            AccessError::KnownHosts(e) => e.category(),
        }
    }

    /// The SSH error, when reaching the host is what failed.
    pub fn ssh_error(&self) -> Option<&SshError> {
        match self {
            AccessError::Ssh { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A Secret may be fixed any time (its watch brings the join back);
    /// an SSH or known-hosts verdict waits for a change.
    pub fn is_permanent(&self) -> bool {
        match self {
            AccessError::Ssh { source, .. } => source.is_permanent(),
            AccessError::KnownHosts(e) => e.is_permanent(),
            AccessError::Kube { .. } | AccessError::Secret { .. } => false,
        }
    }

    fn kube(action: String) -> impl FnOnce(kube::Error) -> AccessError {
        move |source| AccessError::Kube { action, source }
    }

    fn ssh(host: String) -> impl FnOnce(SshError) -> AccessError {
        move |source| AccessError::Ssh { host, source }
    }
}

type Result<T, E = AccessError> = std::result::Result<T, E>;

/// The Secret's state and resourceVersion, without keeping its content.
pub async fn secret_state(
    client: &kube::Client,
    namespace: &str,
    wj: &WorkerJoin,
) -> Result<(SecretState, Option<String>)> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let name = &wj.spec.ssh_secret_ref.name;
    let Some(s) = api
        .get_opt(name)
        .await
        .map_err(AccessError::kube(format!("read Secret {namespace}/{name}")))?
    else {
        return Ok((SecretState::Missing, None));
    };
    let rv = s.metadata.resource_version.clone();
    let ty = s.type_.clone().unwrap_or_default();
    if ty != SSH_AUTH_TYPE {
        return Ok((SecretState::WrongType(ty), rv));
    }
    let data = s.data.unwrap_or_default();
    if !data.contains_key(SSH_PRIVATE_KEY) {
        return Ok((SecretState::MissingKey(SSH_PRIVATE_KEY.into()), rv));
    }
    if let Some(k) = &wj.spec.ssh_secret_ref.sudo_password_key
        && !data.contains_key(k)
    {
        return Ok((SecretState::MissingKey(k.clone()), rv));
    }
    Ok((SecretState::Usable, rv))
}

/// Private key (and sudo password) from the Secret, as [`Secret`]s.
async fn credentials(
    client: &kube::Client,
    namespace: &str,
    secret_name: &str,
    sudo_key: Option<&str>,
) -> Result<(Secret, Option<Secret>)> {
    let err = |reason: &str| AccessError::Secret {
        namespace: namespace.into(),
        name: secret_name.into(),
        reason: reason.into(),
    };
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let s = api
        .get_opt(secret_name)
        .await
        .map_err(AccessError::kube(format!(
            "read Secret {namespace}/{secret_name}"
        )))?
        .ok_or_else(|| err("not found"))?;
    if s.type_.as_deref() != Some(SSH_AUTH_TYPE) {
        return Err(err("is not of type kubernetes.io/ssh-auth"));
    }
    let mut data = s.data.unwrap_or_default();
    let key = data
        .remove(SSH_PRIVATE_KEY)
        .ok_or_else(|| err("has no ssh-privatekey"))?;
    let key = String::from_utf8(key.0).map_err(|_| err("ssh-privatekey is not text"))?;
    let sudo = match sudo_key {
        Some(k) => {
            let v = data
                .remove(k)
                .ok_or_else(|| err("lacks the sudo password key"))?;
            Some(Secret::new(
                String::from_utf8(v.0)
                    .map_err(|_| err("the sudo password is not text"))?
                    .trim_end_matches('\n')
                    .to_string(),
            ))
        }
        None => None,
    };
    Ok((Secret::new(key), sudo))
}

/// The SSH target for a WorkerJoin (bastion included).
pub async fn target(client: &kube::Client, namespace: &str, wj: &WorkerJoin) -> Result<SshTarget> {
    let spec = &wj.spec;
    let (key, sudo) = credentials(
        client,
        namespace,
        &spec.ssh_secret_ref.name,
        spec.ssh_secret_ref.sudo_password_key.as_deref(),
    )
    .await?;
    let mut t = SshTarget::reach(
        spec.endpoint(),
        Auth::KeyData {
            pem: key.clone(),
            passphrase: None,
        },
    );
    t.sudo_password = sudo;
    if let Some(b) = &spec.bastion {
        let bkey = match &b.secret_ref {
            Some(r) => credentials(client, namespace, &r.name, None).await?.0,
            None => key,
        };
        let bastion = SshTarget::reach(
            b.endpoint(),
            Auth::KeyData {
                pem: bkey,
                passphrase: None,
            },
        );
        t.bastion = Some(Box::new(bastion));
    }
    Ok(t)
}

/// What a connection established about the host key.
pub struct Connected {
    pub session: Session,
    pub fingerprint: Option<String>,
    /// The key to record in status (AcceptNew).
    pub recorded_key: Option<String>,
}

/// Connect with the WorkerJoin's host-key policy. With `AcceptNew` the key
/// recorded in the operator's known_hosts ([`knownhosts`], in the
/// namespace `store_ns`) is the only one accepted, for the machine and for
/// its bastion alike; a first key seen is recorded there.
pub async fn connect(
    client: &kube::Client,
    namespace: &str,
    wj: &WorkerJoin,
    opts: &SshOptions,
    store_ns: &str,
) -> Result<Connected> {
    let target = target(client, namespace, wj).await?;
    let host = target.label();
    let uid = wj.metadata.uid.clone().unwrap_or_default();
    let store = MemoryHostKeyStore::new().with_retrust_hint(format!(
        "pin it in spec.hostKey (policy: Pin, key: <the new key>) of WorkerJoin {}/{}, or delete and re-create the WorkerJoin",
        namespace,
        wj.metadata.name.as_deref().unwrap_or_default()
    ));
    let known = match knownhosts::load(client, store_ns, &uid).await? {
        Some(r) => r,
        // A kubeup before 0.2 kept the machine's key in status: taken over
        // once, then only the operator's record counts.
        None => knownhosts::Record {
            target: wj.status.as_ref().and_then(|s| s.host_key.clone()),
            bastion: None,
        },
    };
    let accept_new = |t: &SshTarget| t.host_key.policy == HostKeyPolicy::AcceptNew;
    if accept_new(&target)
        && let Some(k) = &known.target
    {
        store
            .insert_openssh(&target.address, target.port, k)
            .map_err(AccessError::ssh(host.clone()))?;
    }
    if let Some(b) = target.bastion.as_deref()
        && accept_new(b)
        && let Some(k) = &known.bastion
    {
        store
            .insert_openssh(&b.address, b.port, k)
            .map_err(AccessError::ssh(b.label()))?;
    }
    let store = Arc::new(store);
    let session = Session::connect(&target, store.clone(), opts)
        .await
        .map_err(AccessError::ssh(host.clone()))?;
    let seen = knownhosts::Record {
        target: accept_new(&target)
            .then(|| store.recorded(&target.address, target.port))
            .flatten(),
        bastion: target
            .bastion
            .as_deref()
            .filter(|b| accept_new(b))
            .and_then(|b| store.recorded(&b.address, b.port)),
    };
    if seen != known && !seen.is_empty() {
        knownhosts::save(client, store_ns, &uid, &seen).await?;
    }
    let fingerprint = session.host_key_fingerprint().await;
    let recorded_key = match wj.spec.host_key.policy {
        HostKeyPolicy::AcceptNew => seen.target,
        HostKeyPolicy::Pin => session.host_key_openssh().await,
    };
    Ok(Connected {
        session,
        fingerprint,
        recorded_key,
    })
}
