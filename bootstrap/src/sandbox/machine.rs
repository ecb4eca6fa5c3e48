//! One host: its files (hostname, keys, machine-id written into its overlay
//! upper dir before boot), its systemd-nspawn process, and waiting for its
//! sshd.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use super::cgroups;
use super::state::Host;

/// Errors preparing, launching or stopping a host.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "failed to generate an SSH key {path} with ssh-keygen: {detail}; install openssh-client"
    )]
    Keygen { path: PathBuf, detail: String },
    #[error("failed to start host {host}: {source}")]
    Spawn {
        host: String,
        source: std::io::Error,
    },
    #[error(
        "host {host} ({address}) exited while booting; its console log {log} ends with:\n{tail}"
    )]
    Died {
        host: String,
        address: Ipv4Addr,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "host {host} ({address}): sshd did not answer within {secs} s; see its console log {log}:\n{tail}"
    )]
    SshTimeout {
        host: String,
        address: Ipv4Addr,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MachineError + 'a {
    move |source| MachineError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Generates an ed25519 key pair at `path` (and `path.pub`) unless present;
/// returns the public key line.
pub fn keygen(path: &Path, comment: &str) -> Result<String, MachineError> {
    let pub_path = path.with_extension("pub");
    if !path.exists() || !pub_path.exists() {
        let _ = fs::remove_file(path);
        let _ = fs::remove_file(&pub_path);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| MachineError::Keygen {
                path: path.into(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(MachineError::Keygen {
                path: path.into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    let text = fs::read_to_string(&pub_path).map_err(io("read", &pub_path))?;
    Ok(text.trim().to_owned())
}

/// Creates `upper/rel` and every missing parent with the owner and mode the
/// same path has in the lower rootfs, so the overlay does not change them.
fn mkdir_like(lower: &Path, upper: &Path, rel: &str) -> Result<PathBuf, MachineError> {
    let mut cur_upper = upper.to_path_buf();
    let mut cur_lower = lower.to_path_buf();
    for comp in Path::new(rel).components() {
        cur_upper.push(comp);
        cur_lower.push(comp);
        if cur_upper.is_dir() {
            continue;
        }
        fs::create_dir(&cur_upper).map_err(io("create", &cur_upper))?;
        if let Ok(meta) = fs::metadata(&cur_lower) {
            fs::set_permissions(&cur_upper, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io("chmod", &cur_upper))?;
            chown(&cur_upper, Some(meta.uid()), Some(meta.gid()))
                .map_err(io("chown", &cur_upper))?;
        }
    }
    Ok(cur_upper)
}

fn write_file(
    path: &Path,
    content: &str,
    mode: u32,
    owner: (u32, u32),
) -> Result<(), MachineError> {
    fs::write(path, content).map_err(io("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io("chmod", path))?;
    chown(path, Some(owner.0), Some(owner.1)).map_err(io("chown", path))
}

/// uid and gid of `user` in the rootfs's /etc/passwd.
fn passwd_ids(rootfs: &Path, user: &str) -> Result<(u32, u32), MachineError> {
    let path = rootfs.join("etc/passwd");
    let text = fs::read_to_string(&path).map_err(io("read", &path))?;
    text.lines()
        .find_map(|l| match l.split(':').collect::<Vec<_>>().as_slice() {
            [name, _, uid, gid, ..] if *name == user => Some((uid.parse(), gid.parse())),
            _ => None,
        })
        .and_then(|(uid, gid)| Some((uid.ok()?, gid.ok()?)))
        .ok_or_else(|| MachineError::Io {
            what: "find user in",
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, user.to_owned()),
        })
}

/// Writes the host's own files into its upper dir before its first boot:
/// hostname, /etc/hosts naming every host, machine-id, SSH host key, and
/// the sandbox key authorised for root and `kube`. Returns the host's
/// public host key.
pub fn prepare(
    host: &Host,
    rootfs: &Path,
    all: &[(String, Ipv4Addr)],
    authorized_key: &str,
) -> Result<String, MachineError> {
    let upper = host.upper();
    fs::create_dir_all(&upper).map_err(io("create", &upper))?;
    fs::create_dir_all(host.containerd_dir()).map_err(io("create", &host.containerd_dir()))?;
    let etc = mkdir_like(rootfs, &upper, "etc")?;
    let root_ids = (0, 0);
    write_file(
        &etc.join("hostname"),
        &format!("{}\n", host.name),
        0o644,
        root_ids,
    )?;
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n# kubeup sandbox hosts\n",
    );
    for (name, addr) in all {
        hosts.push_str(&format!("{addr}\t{name}\n"));
    }
    write_file(&etc.join("hosts"), &hosts, 0o644, root_ids)?;
    let mut h = Sha256::new();
    h.update(host.name.as_bytes());
    h.update(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes(),
    );
    let machine_id: String = hex::encode(h.finalize()).chars().take(32).collect();
    write_file(
        &etc.join("machine-id"),
        &format!("{machine_id}\n"),
        0o444,
        root_ids,
    )?;
    let ssh = mkdir_like(rootfs, &upper, "etc/ssh")?;
    let key_path = ssh.join("ssh_host_ed25519_key");
    let _ = fs::remove_file(&key_path);
    let _ = fs::remove_file(key_path.with_extension("pub"));
    let host_key = keygen(&key_path, &format!("root@{}", host.name))?;
    for (user_home, user) in [("root", "root"), ("home/kube", "kube")] {
        let ids = passwd_ids(rootfs, user)?;
        mkdir_like(rootfs, &upper, user_home)?;
        let dir = upper.join(user_home).join(".ssh");
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", &dir))?;
        chown(&dir, Some(ids.0), Some(ids.1)).map_err(io("chown", &dir))?;
        write_file(
            &dir.join("authorized_keys"),
            &format!("{authorized_key}\n"),
            0o600,
            ids,
        )?;
    }
    Ok(host_key)
}

/// The systemd-nspawn command line for a host (flags proven on this
/// machine: keyring syscalls, all capabilities, /dev/kmsg,
/// /var/lib/containerd on a real directory).
pub fn nspawn_args(host: &Host, rootfs: &Path) -> Vec<String> {
    let r = rootfs.display();
    vec![
        "--quiet".into(),
        "--boot".into(),
        format!("--directory={r}"),
        format!("--overlay={r}:{}:/", host.upper().display()),
        format!(
            "--bind={}:/var/lib/containerd",
            host.containerd_dir().display()
        ),
        "--bind=/dev/kmsg".into(),
        format!("--network-namespace-path=/run/netns/{}", host.netns),
        "--register=no".into(),
        "--keep-unit".into(),
        format!("--machine={}", host.name),
        "--console=read-only".into(),
        "--system-call-filter=add_key keyctl request_key".into(),
        "--capability=all".into(),
        "--resolv-conf=off".into(),
        "--timezone=off".into(),
        "--link-journal=no".into(),
    ]
}

/// Starts the host: re-executes this binary as `sandbox __launch`, which
/// moves itself into the host's cgroups and then execs systemd-nspawn (so
/// the PID returned is nspawn's). The process is detached (own session).
pub fn launch(host: &Host, rootfs: &Path) -> Result<u32, MachineError> {
    let exe = std::env::current_exe().map_err(|source| MachineError::Spawn {
        host: host.name.clone(),
        source,
    })?;
    let log_path = host.console_log();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io("open", &log_path))?;
    let log2 = log.try_clone().map_err(io("open", &log_path))?;
    let mut cmd = Command::new(exe);
    cmd.args(["sandbox", "__launch"]);
    for cg in &host.cgroups {
        cmd.arg("--cgroup").arg(cg);
    }
    cmd.arg("--")
        .arg("systemd-nspawn")
        .args(nspawn_args(host, rootfs));
    cmd.env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1")
        .env("SYSTEMD_NSPAWN_LOCK", "0")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let child = cmd.spawn().map_err(|source| MachineError::Spawn {
        host: host.name.clone(),
        source,
    })?;
    Ok(child.id())
}

/// The hidden `sandbox __launch`: new session, join the cgroups, exec.
pub fn launch_exec(cgroup_dirs: &[PathBuf], command: &[String]) -> anyhow::Result<()> {
    let _ = nix::unistd::setsid();
    cgroups::join(cgroup_dirs, std::process::id())?;
    let (prog, args) = command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("sandbox __launch: no command given"))?;
    let err = Command::new(prog).args(args).exec();
    Err(anyhow::anyhow!(
        "failed to exec {prog}: {err}; install systemd-container"
    ))
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // the state is the field after the ")" closing the command name
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Whether our child `pid` has exited (and reaps it). Unlike reading
/// /proc, this has no false positives while the launcher execs nspawn.
/// For a process that is not our child, falls back to [`is_alive`].
pub fn child_exited(pid: u32) -> bool {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Ok(p) = i32::try_from(pid) else {
        return true;
    };
    match waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => true,
        Ok(_) => false,
        Err(nix::errno::Errno::ECHILD) => !is_alive(pid),
        Err(_) => false,
    }
}

/// Whether `pid` is this host's launcher or nspawn (not a reused PID), and
/// not a zombie.
pub fn is_our_process(pid: u32, host: &Host) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = fs::read(proc.join("cmdline")) else {
        return false;
    };
    let want = format!("--machine={}", host.name);
    cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes())
}

/// Whether the host's machine is running.
pub fn is_running(host: &Host) -> bool {
    host.pid.is_some_and(|p| is_our_process(p, host)) || !cgroups::procs(&host.cgroups).is_empty()
}

/// Whether sshd on `address:22` sends its banner within `timeout`.
pub fn ssh_answers(address: Ipv4Addr, timeout: Duration) -> bool {
    let addr = SocketAddr::from((address, 22));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(20).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Waits until the host's sshd answers; fails early if nspawn (our own
/// child here) exits.
pub fn wait_ssh(host: &Host, pid: u32, timeout: Duration) -> Result<Duration, MachineError> {
    let start = Instant::now();
    loop {
        if ssh_answers(host.address, Duration::from_millis(300)) {
            return Ok(start.elapsed());
        }
        if child_exited(pid) {
            return Err(MachineError::Died {
                host: host.name.clone(),
                address: host.address,
                log: host.console_log(),
                tail: log_tail(&host.console_log()),
            });
        }
        if start.elapsed() > timeout {
            return Err(MachineError::SshTimeout {
                host: host.name.clone(),
                address: host.address,
                secs: timeout.as_secs(),
                log: host.console_log(),
                tail: log_tail(&host.console_log()),
            });
        }
        sleep(Duration::from_millis(100));
    }
}

/// Powers the host off: SIGTERM to nspawn (systemd shuts down), after
/// `grace` SIGKILL to everything left in its cgroups, then removes the
/// cgroups (including nspawn's `payload`/`supervisor`).
pub fn stop(host: &Host, grace: Duration) -> Result<(), MachineError> {
    if let Some(pid) = host.pid
        && is_our_process(pid, host)
        && let Ok(p) = i32::try_from(pid)
    {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && is_our_process(pid, host) {
            sleep(Duration::from_millis(50));
        }
        if is_our_process(pid, host) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    cgroups::kill_all(&host.cgroups, Duration::from_secs(2));
    cgroups::remove(&host.cgroups, Duration::from_secs(2))?;
    Ok(())
}
