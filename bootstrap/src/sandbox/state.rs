//! The sandbox's state file, `DIR/sandbox/state.json`.
//!
//! Every thing the sandbox creates (bridge, netns, veth, cgroup, process) is
//! recorded here *before* it is created, so `sandbox down` can remove it
//! even after a crash half-way through `up`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to read sandbox state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "failed to parse sandbox state {path}: {source}; remove what it names by hand or delete the file"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("failed to write sandbox state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to lock sandbox state {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },
}

/// The whole sandbox.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Short hash of the sandbox directory; part of every name.
    pub id: String,
    /// The sandbox directory (absolute).
    pub dir: PathBuf,
    /// The cached base rootfs the hosts overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
    /// The machine-side bridge, once recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Bridge>,
    /// Kernel sysctls as they were before the first host booted (a kubelet
    /// inside a host writes the real kernel's values); restored by `down`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub saved_sysctls: BTreeMap<String, String>,
    /// The hosts.
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// How many of the first hosts are controllers.
    #[serde(default = "one")]
    pub controllers: u32,
    /// How many hosts after the controllers are dedicated etcd hosts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub etcd_hosts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl State {
    /// What host `index` (1-based) is: `controller`, `etcd` or `worker`.
    pub fn role(&self, index: u32) -> &'static str {
        let controllers = self.controllers.max(1);
        if index <= controllers {
            "controller"
        } else if index <= controllers + self.etcd_hosts {
            "etcd"
        } else {
            "worker"
        }
    }

    /// How many of the first hosts are no worker.
    pub fn not_workers(&self) -> usize {
        (self.controllers.max(1) + self.etcd_hosts) as usize
    }
}

fn one() -> u32 {
    1
}

/// The bridge on the machine side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bridge {
    pub name: String,
    /// Address with prefix, e.g. `198.18.0.1/24`.
    pub address: String,
}

/// One sandbox host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// 1-based index.
    pub index: u32,
    /// Hostname, machine name and network namespace name.
    pub name: String,
    pub address: Ipv4Addr,
    /// `ip netns` name (`/run/netns/<netns>`).
    pub netns: String,
    /// The machine-side end of the host's veth (the inner end is `eth0`).
    pub veth: String,
    /// MAC address of the host's `eth0`.
    pub mac: String,
    /// The host's own directory: `upper/`, `containerd/`, `console.log`.
    pub root: PathBuf,
    /// `sbx-<name>` in every cgroup hierarchy.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// PID of the running systemd-nspawn, if started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The host's SSH host public key (`ssh-ed25519 AAAA… root@name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

impl Host {
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }
    pub fn containerd_dir(&self) -> PathBuf {
        self.root.join("containerd")
    }
    pub fn console_log(&self) -> PathBuf {
        self.root.join("console.log")
    }
}

/// `DIR/sandbox`.
pub fn sandbox_dir(dir: &Path) -> PathBuf {
    dir.join("sandbox")
}

/// `DIR/sandbox/state.json`.
pub fn state_path(dir: &Path) -> PathBuf {
    sandbox_dir(dir).join("state.json")
}

impl State {
    /// Reads the state, `None` when there is no state file.
    pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
        let path = state_path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Parse { path, source })
    }

    /// Writes the state atomically (temp file + rename + fsync).
    pub fn save(&self) -> Result<(), StateError> {
        let path = state_path(&self.dir);
        let write = || -> std::io::Result<()> {
            fs::create_dir_all(sandbox_dir(&self.dir))?;
            let tmp = path.with_extension("json.tmp");
            let mut f = fs::File::create(&tmp)?;
            f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|source| StateError::Write { path, source })
    }

    /// Removes the state file.
    pub fn remove(dir: &Path) -> Result<(), StateError> {
        let path = state_path(dir);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write { path, source }),
        }
    }

    /// Finds a host by name or by 1-based index.
    pub fn host(&self, which: &str) -> Option<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == which || which.parse::<u32>().ok() == Some(h.index))
    }

    pub fn host_mut(&mut self, name: &str) -> Option<&mut Host> {
        self.hosts.iter_mut().find(|h| h.name == name)
    }
}

/// An exclusive lock on one sandbox directory, held while a command changes
/// it (released on drop).
pub struct DirLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, StateError> {
        let sdir = sandbox_dir(dir);
        let path = sdir.join(".lock");
        let file = fs::create_dir_all(&sdir)
            .and_then(|()| {
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .map_err(|source| StateError::Write {
                path: path.clone(),
                source,
            })?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, source)| StateError::Lock { path, source })?;
        Ok(DirLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_finds_hosts() {
        let tmp = tempfile::tempdir().unwrap();
        let mut st = State {
            id: "abc123".into(),
            dir: tmp.path().to_path_buf(),
            ..State::default()
        };
        assert_eq!(State::load(tmp.path()).unwrap(), None);
        st.hosts.push(Host {
            index: 2,
            name: "kube-abc123-2".into(),
            address: Ipv4Addr::new(198, 18, 0, 12),
            netns: "kube-abc123-2".into(),
            veth: "kvabc123-2".into(),
            mac: "02:00:00:00:00:02".into(),
            root: tmp.path().join("h"),
            cgroups: vec![],
            pid: Some(42),
            host_key: None,
        });
        st.save().unwrap();
        let back = State::load(tmp.path()).unwrap().unwrap();
        assert_eq!(back, st);
        assert_eq!(back.host("2").unwrap().name, "kube-abc123-2");
        assert_eq!(back.host("kube-abc123-2").unwrap().index, 2);
        assert!(back.host("3").is_none());
        State::remove(tmp.path()).unwrap();
        State::remove(tmp.path()).unwrap();
    }
}
