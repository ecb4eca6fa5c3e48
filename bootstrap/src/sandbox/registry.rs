//! Which sandbox holds the address range: `/run/kubeup/sandboxes/<id>.json`.
//!
//! Every sandbox uses 198.18.0.0/24, so only one can be up at a time; a
//! second `up` in another directory is refused with the directory that
//! holds the range. `/run` is cleared at reboot, as are the links.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::network;

pub const REGISTRY_DIR: &str = "/run/kubeup/sandboxes";

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to lock {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },
    #[error(
        "the sandbox range {range} is held by the sandbox in {holder}; run `kubeup sandbox down --dir {holder}` first"
    )]
    Held { range: String, holder: PathBuf },
    #[error(
        "the sandbox range {range} is already in use on interface {interface} ({address}), not by a kubeup sandbox; remove that address first"
    )]
    Foreign {
        range: String,
        interface: String,
        address: String,
    },
    #[error(transparent)]
    Net(#[from] network::NetError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: String,
    pub dir: PathBuf,
    pub range: String,
    pub bridge: String,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RegistryError + 'a {
    move |source| RegistryError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn lock() -> Result<nix::fcntl::Flock<fs::File>, RegistryError> {
    let dir = Path::new(REGISTRY_DIR);
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    let path = dir.join(".lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, source)| RegistryError::Lock { path, source })
}

/// Whether a registered sandbox still exists: its state file or its bridge.
fn is_live(e: &Entry) -> bool {
    super::state::state_path(&e.dir).exists() || network::link_exists(&e.bridge)
}

/// Claims the range for `entry`, refusing when another live sandbox holds
/// it (stale entries are dropped).
pub fn claim(entry: &Entry) -> Result<(), RegistryError> {
    let _lock = lock()?;
    let dir = Path::new(REGISTRY_DIR);
    for e in fs::read_dir(dir).map_err(io("read", dir))?.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(other) = fs::read_to_string(&path)
            .map_err(|_| ())
            .and_then(|t| serde_json::from_str::<Entry>(&t).map_err(|_| ()))
        else {
            let _ = fs::remove_file(&path);
            continue;
        };
        if other.id == entry.id {
            continue;
        }
        if is_live(&other) {
            return Err(RegistryError::Held {
                range: other.range,
                holder: other.dir,
            });
        }
        let _ = fs::remove_file(&path);
    }
    if let Some((interface, address)) = network::range_holder(&entry.bridge)? {
        return Err(RegistryError::Foreign {
            range: network::RANGE.into(),
            interface,
            address,
        });
    }
    let path = dir.join(format!("{}.json", entry.id));
    serde_json::to_string_pretty(entry)
        .map_err(std::io::Error::from)
        .and_then(|json| fs::write(&path, json))
        .map_err(io("write", &path))
}

/// Releases the claim of sandbox `id` (absent is fine).
pub fn release(id: &str) -> Result<(), RegistryError> {
    let _lock = lock()?;
    let path = Path::new(REGISTRY_DIR).join(format!("{id}.json"));
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RegistryError::Io {
            what: "remove",
            path,
            source,
        }),
    }
}
