//! What `sandbox up` writes into DIR besides the sandbox itself: the PKI
//! and `cluster.yaml` (as `kubeup init` does) with host 1 as the controller,
//! `DIR/workers/<host>.yaml` (a `kubernetes.io/ssh-auth` Secret plus a
//! WorkerJoin) for every other host, and `DIR/sandbox/known_hosts`.
//! Every host key is pinned.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubeup_crds::cluster::{
    ClusterSpec, ControlPlaneEndpoint, ControllerHost, EndpointKind, KubeletSettings,
};
use kubeup_crds::{Cluster, HostKeyPolicy, HostKeyTrust, SshSecretRef, WorkerJoin, WorkerJoinSpec};

use super::state::{Host, State};

/// Namespace of the WorkerJoins and their Secrets.
pub const NAMESPACE: &str = "kubeup-system";
/// The sandbox's private key, relative to DIR.
pub const KEY_FILE: &str = "sandbox/id_ed25519";
/// known_hosts with every host's pinned key, relative to DIR.
pub const KNOWN_HOSTS: &str = "sandbox/known_hosts";

/// Errors writing the cluster files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to render {what}: {source}")]
    Render {
        what: String,
        source: serde_yaml_ng::Error,
    },
    #[error("failed to initialise the cluster directory {dir}: {source}")]
    Init {
        dir: PathBuf,
        source: kubeup_provision::init::InitError,
    },
    #[error("host {0} has no recorded host key; run `kubeup sandbox down` and `up` again")]
    NoHostKey(String),
    #[error("the sandbox state records no host; run `kubeup sandbox down` and `up` again")]
    NoHosts,
}

fn write(path: &Path, content: &str, mode: u32) -> Result<(), FilesError> {
    let io = |what| {
        move |source| FilesError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(io("create the directory of"))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, content).map_err(io("write"))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io("chmod"))?;
    fs::rename(&tmp, path).map_err(io("write"))
}

fn yaml<T: serde::Serialize>(what: &str, v: &T) -> Result<String, FilesError> {
    serde_yaml_ng::to_string(v).map_err(|source| FilesError::Render {
        what: what.into(),
        source,
    })
}

fn pin(h: &Host) -> Result<HostKeyTrust, FilesError> {
    let key = h
        .host_key
        .clone()
        .ok_or_else(|| FilesError::NoHostKey(h.name.clone()))?;
    Ok(HostKeyTrust {
        policy: HostKeyPolicy::Pin,
        key: Some(key),
    })
}

/// The Cluster document for the sandbox: the first `st.controllers` hosts
/// are the controllers (several share a virtual IP), the next
/// `st.etcd_hosts` dedicated etcd hosts.
pub fn cluster(st: &State) -> Result<Cluster, FilesError> {
    if st.hosts.is_empty() {
        return Err(FilesError::NoHosts);
    }
    let reach = |h: &Host| {
        Ok(ControllerHost {
            address: h.address.to_string(),
            port: 22,
            user: "root".into(),
            private_key_file: Some(KEY_FILE.into()),
            host_key: pin(h)?,
            name: Some(h.name.clone()),
            bastion: None,
        })
    };
    let controllers = st
        .hosts
        .iter()
        .filter(|h| st.role(h.index) == "controller")
        .map(reach)
        .collect::<Result<Vec<_>, FilesError>>()?;
    let external = st
        .hosts
        .iter()
        .filter(|h| st.role(h.index) == "etcd")
        .map(reach)
        .collect::<Result<Vec<_>, FilesError>>()?;
    let control_plane_endpoint = (controllers.len() > 1).then(|| ControlPlaneEndpoint {
        address: super::network::VIRTUAL_IP.into(),
        kind: EndpointKind::VirtualIP,
        port: kubeup_crds::cluster::API_PORT,
        virtual_router_id: 51,
    });
    let spec = ClusterSpec {
        kubernetes_version: kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION.into(),
        etcd: kubeup_crds::cluster::Etcd { external },
        controllers,
        control_plane_endpoint,
        networking: Default::default(),
        artifacts: Default::default(),
        certificates: Default::default(),
        // Sandbox hosts share one machine's small disk: upstream thresholds
        // would evict pods and taint Nodes with disk pressure.
        kubelet: KubeletSettings {
            relaxed_eviction: true,
        },
        addons: Default::default(),
    };
    Ok(Cluster::new("sandbox", spec))
}

/// The Secret and WorkerJoin for a worker host.
pub fn worker(h: &Host, private_key: &str) -> Result<(Secret, WorkerJoin), FilesError> {
    let secret_name = format!("{}-ssh", h.name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/ssh-auth".into()),
        string_data: Some(BTreeMap::from([(
            "ssh-privatekey".to_owned(),
            private_key.to_owned(),
        )])),
        ..Default::default()
    };
    let mut wj = WorkerJoin::new(
        &h.name,
        WorkerJoinSpec {
            address: h.address.to_string(),
            port: 22,
            user: "root".into(),
            ssh_secret_ref: SshSecretRef {
                name: secret_name,
                sudo_password_key: None,
            },
            host_key: pin(h)?,
            ..Default::default()
        },
    );
    wj.metadata.namespace = Some(NAMESPACE.into());
    Ok((secret, wj))
}

/// known_hosts lines pinning every host by address and name.
pub fn known_hosts(st: &State) -> Result<String, FilesError> {
    let mut out = String::new();
    for h in &st.hosts {
        let key = h
            .host_key
            .as_deref()
            .ok_or_else(|| FilesError::NoHostKey(h.name.clone()))?;
        // "type base64" without the comment
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        out.push_str(&format!("{},{} {}\n", h.address, h.name, key.join(" ")));
    }
    Ok(out)
}

/// Writes the PKI, cluster.yaml, workers/ and known_hosts into DIR.
pub fn write_all(st: &State) -> Result<Vec<PathBuf>, FilesError> {
    let dir = &st.dir;
    let mut written = Vec::new();
    // cluster.yaml always reflects this sandbox's hosts and keys (an
    // earlier one in DIR pinned keys that no longer exist); then
    // `kubeup init` validates it and creates or keeps the PKI.
    let cluster_path = dir.join("cluster.yaml");
    let cluster = cluster(st)?;
    write(
        &cluster_path,
        &kubeup_provision::config::render_cluster_yaml(&cluster),
        0o644,
    )?;
    kubeup_provision::init::init_cluster_dir(dir, &cluster).map_err(|source| FilesError::Init {
        dir: dir.clone(),
        source,
    })?;
    written.push(cluster_path);
    written.push(dir.join("pki"));
    let key_path = dir.join(KEY_FILE);
    let private_key = fs::read_to_string(&key_path).map_err(|source| FilesError::Io {
        what: "read",
        path: key_path.clone(),
        source,
    })?;
    let workers = dir.join("workers");
    if workers.is_dir() {
        // Hosts of an earlier sandbox in this DIR are gone.
        for e in fs::read_dir(&workers).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "yaml") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    for h in st.hosts.iter().skip(st.not_workers()) {
        let (secret, wj) = worker(h, &private_key)?;
        let body = format!(
            "# Written by `kubeup sandbox up`: apply with `kubectl apply -f` to join {} ({}).\n{}---\n{}",
            h.name,
            h.address,
            yaml("Secret", &secret)?,
            yaml("WorkerJoin", &wj)?
        );
        let path = workers.join(format!("{}.yaml", h.name));
        write(&path, &body, 0o600)?;
        written.push(path);
    }
    let kh = dir.join(KNOWN_HOSTS);
    write(&kh, &known_hosts(st)?, 0o644)?;
    written.push(kh);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn state() -> State {
        let host = |i: u32| Host {
            index: i,
            name: format!("kube-abc123-{i}"),
            address: Ipv4Addr::new(198, 18, 0, 10 + i as u8),
            netns: format!("kube-abc123-{i}"),
            veth: format!("kvabc123-{i}"),
            mac: String::new(),
            root: PathBuf::new(),
            cgroups: vec![],
            pid: None,
            host_key: Some(format!(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i} root@kube-abc123-{i}"
            )),
        };
        State {
            id: "abc123".into(),
            dir: PathBuf::from("/tmp/x"),
            hosts: vec![host(1), host(2)],
            ..Default::default()
        }
    }

    #[test]
    fn cluster_pins_host_one() {
        let c = cluster(&state()).unwrap();
        let ctl = &c.spec.controllers[0];
        assert_eq!(ctl.address, "198.18.0.11");
        assert_eq!(ctl.private_key_file.as_deref(), Some(KEY_FILE));
        assert_eq!(ctl.host_key.policy, HostKeyPolicy::Pin);
        assert!(
            ctl.host_key
                .key
                .as_deref()
                .unwrap()
                .starts_with("ssh-ed25519 ")
        );
        assert_eq!(c.spec.artifacts.bundle_dir, None);
        // cluster.yaml must load back as a Cluster.
        let text = serde_yaml_ng::to_string(&c).unwrap();
        let back: Cluster = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back.spec, c.spec);
    }

    #[test]
    fn worker_has_secret_and_pinned_join() {
        let st = state();
        let (secret, wj) = worker(&st.hosts[1], "PRIVATE").unwrap();
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/ssh-auth"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some(NAMESPACE));
        assert_eq!(wj.metadata.namespace.as_deref(), Some(NAMESPACE));
        assert_eq!(wj.spec.ssh_secret_ref.name, "kube-abc123-2-ssh");
        assert_eq!(wj.spec.address, "198.18.0.12");
        assert_eq!(wj.spec.host_key.policy, HostKeyPolicy::Pin);
    }

    #[test]
    fn known_hosts_names_address_and_name() {
        let kh = known_hosts(&state()).unwrap();
        assert_eq!(
            kh.lines().next().unwrap(),
            "198.18.0.11,kube-abc123-1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI1"
        );
    }
}
