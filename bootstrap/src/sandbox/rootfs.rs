//! The base rootfs every host overlays: Debian bookworm (minbase) with
//! systemd, sshd and what Kubernetes hosts need but cannot fetch here. Built
//! once with debootstrap into a temp dir and renamed into the cache when
//! complete, so a crashed build never leaves a half rootfs behind.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// Debian suite of the rootfs.
pub const SUITE: &str = "bookworm";
/// Default mirror (override: `KUBEUP_DEBIAN_MIRROR`).
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Packages on top of minbase. Not containerd: kubeup installs its own from
/// the bundle.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "iptables",
    "conntrack",
    "socat",
    "ethtool",
    "kmod",
    "sudo",
    "ca-certificates",
    "util-linux",
    "procps",
    "mount",
    "libseccomp2",
    "iputils-ping",
    "netbase",
    "less",
    // Bundle files travel zstd-compressed to hosts that have it.
    "zstd",
    // Every node's local load balancer in front of the apiservers, and the
    // controllers' virtual IP with its /readyz probe (kubeup runs them
    // under units of its own).
    "haproxy",
    "keepalived",
    "curl",
];

/// Makes each cgroup v1 hierarchy writable early in boot: nspawn mounts
/// them read-only, and containerd and kubelet must create cgroups.
pub const CGROUP_RW_UNIT: &str = "\
[Unit]
Description=Make cgroup hierarchies writable inside the kubeup sandbox
DefaultDependencies=no
Before=sysinit.target containerd.service kubelet.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*; do mountpoint -q $d && mount -o remount,bind,rw,nosuid,nodev,noexec $d; done; true'
[Install]
WantedBy=sysinit.target
";

/// sshd: keys only, root by key only, one ed25519 host key per host.
pub const SSHD_CONFIG: &str = "\
# Written by kubeup sandbox: key authentication only.
HostKey /etc/ssh/ssh_host_ed25519_key
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
";

/// No outside resolver: sandbox traffic stays on the bridge.
pub const RESOLV_CONF: &str = "# kubeup sandbox: no resolver outside the sandbox\n";

/// Units that only cost time in a throwaway host.
const DISABLED_LINKS: &[&str] = &[
    "etc/systemd/system/timers.target.wants/apt-daily.timer",
    "etc/systemd/system/timers.target.wants/apt-daily-upgrade.timer",
    "etc/systemd/system/timers.target.wants/dpkg-db-backup.timer",
    "etc/systemd/system/timers.target.wants/e2scrub_all.timer",
    "etc/systemd/system/timers.target.wants/fstrim.timer",
    "etc/systemd/system/multi-user.target.wants/e2scrub_reap.service",
    "etc/systemd/system/getty.target.wants/getty@tty1.service",
    // The packages' own services: kubeup runs haproxy and keepalived with
    // its configuration under its own units.
    "etc/systemd/system/multi-user.target.wants/haproxy.service",
    "etc/systemd/system/multi-user.target.wants/keepalived.service",
];

/// Bump when the customisation below changes: it is part of the cache key.
const RECIPE_VERSION: &str = "5";

/// Errors building the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "debootstrap failed (log: {log}):\n{tail}\ncheck that {mirror} is reachable (or set KUBEUP_DEBIAN_MIRROR)"
    )]
    Debootstrap {
        log: PathBuf,
        tail: String,
        mirror: String,
    },
    #[error("failed to run `{cmd}` in the new rootfs: {detail}")]
    Chroot { cmd: String, detail: String },
    #[error("failed to lock the rootfs cache {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// `${KUBEUP_CACHE:-$HOME/.cache/kubeup}`.
pub fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("KUBEUP_CACHE").filter(|c| !c.is_empty()) {
        return PathBuf::from(c);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("kubeup")
}

/// `bookworm-<hash>`: the hash covers everything baked into the rootfs.
pub fn rootfs_name() -> String {
    let mut h = Sha256::new();
    for part in [
        SUITE,
        RECIPE_VERSION,
        CGROUP_RW_UNIT,
        SSHD_CONFIG,
        RESOLV_CONF,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for p in PACKAGES {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest: String = hex::encode(h.finalize()).chars().take(12).collect();
    format!("{SUITE}-{digest}")
}

/// The cached rootfs path (may not exist yet).
pub fn rootfs_path() -> PathBuf {
    rootfs_dir().join(rootfs_name())
}

/// Where cached rootfs trees live.
fn rootfs_dir() -> PathBuf {
    cache_dir().join("rootfs")
}

/// Returns the cached rootfs, building it first if needed.
pub fn ensure(progress: &dyn Fn(&str)) -> Result<PathBuf, RootfsError> {
    let final_path = rootfs_path();
    if final_path.is_dir() {
        return Ok(final_path);
    }
    let parent = &rootfs_dir();
    fs::create_dir_all(parent).map_err(io("create", parent))?;
    let lock_path = parent.join(".lock");
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open", &lock_path))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, source)| RootfsError::Lock {
            path: lock_path.clone(),
            source,
        },
    )?;
    if final_path.is_dir() {
        // Another `sandbox up` built it while we waited for the lock.
        return Ok(final_path);
    }
    let name = rootfs_name();
    // With the lock held, any temp dir is a leftover of a crashed build.
    if let Ok(rd) = fs::read_dir(parent) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    let log = parent.join(format!("{name}.debootstrap.log"));
    let mirror = std::env::var("KUBEUP_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());
    progress(&format!(
        "building the {SUITE} rootfs with debootstrap (once; cached in {}) …",
        final_path.display()
    ));
    let log_file = fs::File::create(&log).map_err(io("create", &log))?;
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&tmp)
        .arg(&mirror)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(io("open", &log))?)
        .stderr(log_file)
        .status()
        .map_err(io("run debootstrap for", &tmp))?;
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let _ = fs::remove_dir_all(&tmp);
        return Err(RootfsError::Debootstrap {
            log,
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            mirror,
        });
    }
    if let Err(e) = customize(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &final_path).map_err(io("rename the new rootfs to", &final_path))?;
    Ok(final_path)
}

fn write(root: &Path, rel: &str, content: &str, mode: u32) -> Result<(), RootfsError> {
    let path = root.join(rel);
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(io("create", p))?;
    }
    let _ = fs::remove_file(&path);
    fs::write(&path, content).map_err(io("write", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io("chmod", &path))
}

fn chroot(root: &Path, args: &[&str]) -> Result<(), RootfsError> {
    let out = Command::new("chroot")
        .arg(root)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RootfsError::Chroot {
            cmd: args.join(" "),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RootfsError::Chroot {
            cmd: args.join(" "),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Everything the sandbox needs on top of debootstrap's result.
fn customize(root: &Path) -> Result<(), RootfsError> {
    // Each host gets its own host keys and machine-id in its upper dir.
    let ssh = root.join("etc/ssh");
    for e in fs::read_dir(&ssh).map_err(io("read", &ssh))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(e.path()).map_err(io("remove", &e.path()))?;
        }
    }
    write(
        root,
        "etc/ssh/sshd_config.d/kubeup.conf",
        SSHD_CONFIG,
        0o644,
    )?;
    write(root, "etc/machine-id", "", 0o444)?;
    write(root, "etc/resolv.conf", RESOLV_CONF, 0o644)?;
    write(root, "etc/hostname", "localhost\n", 0o644)?;
    // pam_loginuid cannot always write /proc/self/loginuid in a container.
    let pam = root.join("etc/pam.d/sshd");
    if let Ok(text) = fs::read_to_string(&pam) {
        let text = text.replace(
            "session    required     pam_loginuid.so",
            "session    optional     pam_loginuid.so",
        );
        fs::write(&pam, text).map_err(io("write", &pam))?;
    }
    write(
        root,
        "etc/systemd/system/kubeup-cgroup-rw.service",
        CGROUP_RW_UNIT,
        0o644,
    )?;
    let wants = root.join("etc/systemd/system/sysinit.target.wants");
    fs::create_dir_all(&wants).map_err(io("create", &wants))?;
    let link = wants.join("kubeup-cgroup-rw.service");
    let _ = fs::remove_file(&link);
    symlink("/etc/systemd/system/kubeup-cgroup-rw.service", &link).map_err(io("link", &link))?;
    for rel in DISABLED_LINKS {
        let _ = fs::remove_file(root.join(rel));
    }
    // The non-root user for the sudo path; '*' = no password, key login only.
    chroot(
        root,
        &["useradd", "--create-home", "--shell", "/bin/bash", "kube"],
    )?;
    chroot(root, &["usermod", "--password", "*", "kube"])?;
    write(
        root,
        "etc/sudoers.d/kube",
        "kube ALL=(ALL) NOPASSWD:ALL\n",
        0o440,
    )?;
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let d = root.join(dir);
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    write(
        root,
        "etc/kubeup-sandbox-rootfs",
        &format!("{}\npackages: {}\n", rootfs_name(), PACKAGES.join(" ")),
        0o644,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_name_is_stable_and_names_the_suite() {
        let n = rootfs_name();
        assert!(n.starts_with("bookworm-"), "{n}");
        assert_eq!(n.len(), "bookworm-".len() + 12);
        assert_eq!(n, rootfs_name());
    }

    #[test]
    fn packages_exclude_containerd() {
        assert!(!PACKAGES.iter().any(|p| p.contains("containerd")));
        assert!(PACKAGES.contains(&"libseccomp2"));
    }
}
