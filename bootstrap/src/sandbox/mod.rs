//! `kubeup sandbox`: real "bare-metal" hosts on one Linux machine.
//!
//! Each host is a Debian bookworm system booted by systemd-nspawn (real
//! systemd and sshd) from a cached debootstrap rootfs with a per-host
//! overlay, in its own network namespace on a private bridge
//! (`198.18.0.1/24` on the machine, host *i* at `198.18.0.(10+i)`, no
//! default route), started from its own cgroup in every hierarchy.
//!
//! Layout of the sandbox directory `DIR`:
//!
//! | path                              | what                                        |
//! |-----------------------------------|---------------------------------------------|
//! | `cluster.yaml`, `pki/`            | as `kubeup init`; host 1 is the controller  |
//! | `workers/<host>.yaml`             | Secret + WorkerJoin for each other host     |
//! | `sandbox/id_ed25519`              | the key root and `kube` log in with         |
//! | `sandbox/known_hosts`             | every host's pinned host key                |
//! | `sandbox/state.json`              | what exists, for `down` and the fault hooks |
//! | `sandbox/hosts/<host>/upper`      | the host's overlay upper dir                |
//! | `sandbox/hosts/<host>/containerd` | bound to the host's `/var/lib/containerd`   |
//! | `sandbox/hosts/<host>/console.log`| the host's console                          |

mod cgroups;
mod files;
mod machine;
mod network;
mod registry;
mod rootfs;
mod state;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

use state::{Bridge, DirLock, Host, State};

/// Sysctls of the real kernel a kubelet inside a host may change (its
/// `/proc/sys` is writable): recorded before the first host boots and
/// restored by `down`.
const SAVED_SYSCTLS: &[&str] = &[
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// `kubeup sandbox`: local "bare-metal" hosts for trying kubeup and for
/// end-to-end tests (needs root, Linux, systemd-container and debootstrap).
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// The sandbox directory: gets cluster.yaml, pki/, workers/ and
    /// sandbox/ (keys, state, host overlays).
    #[arg(long, global = true, env = "KUBEUP_SANDBOX_DIR", default_value = ".")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum SandboxCommand {
    /// Boot N hosts and write cluster.yaml, pki/ and workers/ into DIR.
    Up {
        /// Number of hosts (host 1 is the controller).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=network::MAX_HOSTS as i64))]
        hosts: u32,
        /// How many of the hosts (the first ones) are controllers: 1, 3 or
        /// 5. With more than one, cluster.yaml gets the virtual IP
        /// `198.18.0.250` as its control-plane endpoint.
        #[arg(long, default_value_t = 1, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(["1", "3", "5"]), |s| s.parse::<u32>().unwrap_or(1)))]
        controllers: u32,
        /// How many hosts after the controllers run etcd alone (cluster.yaml
        /// lists them in spec.etcd.external): 0, 1, 3 or 5.
        #[arg(long, default_value_t = 0, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(["0", "1", "3", "5"]), |s| s.parse::<u32>().unwrap_or(0)))]
        etcd_hosts: u32,
        /// Leave what was made in place when `up` fails (for debugging;
        /// `sandbox down` removes it).
        #[arg(long)]
        keep_on_failure: bool,
    },
    /// Remove every host, link, namespace, cgroup and overlay; restore
    /// sysctls. Idempotent; works after a crash.
    Down,
    /// Show hosts, addresses and states.
    Status {
        /// Print JSON (the state plus what was observed) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cut a host's link (its cable is pulled: connections time out).
    Cut(HostArg),
    /// Restore a host's link.
    Heal(HostArg),
    /// Power a host off (its files are kept).
    Stop(HostArg),
    /// Boot a stopped host again.
    Start(HostArg),
    #[command(name = "__launch", hide = true)]
    Launch {
        #[arg(long = "cgroup")]
        cgroups: Vec<PathBuf>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct HostArg {
    /// Host name or 1-based index.
    pub host: String,
}

/// Preconditions that make the sandbox impossible on this machine.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox needs Linux (systemd-nspawn, network namespaces); this is {0}")]
    NotLinux(&'static str),
    #[error("the sandbox needs root (namespaces, bridges, cgroups); run `sudo kubeup sandbox …`")]
    NotRoot,
    #[error("`{tool}` was not found in PATH; install it with `apt-get install {package}`")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "no sandbox in {0} (no sandbox/state.json); start one with `kubeup sandbox up --dir {0}`"
    )]
    NoSandbox(PathBuf),
    #[error("no host {host:?} in the sandbox in {dir}; hosts: {names}")]
    NoHost {
        host: String,
        dir: PathBuf,
        names: String,
    },
    #[error(
        "a sandbox is already up in {0}; see `kubeup sandbox status --dir {0}`, or remove it with `kubeup sandbox down --dir {0}`"
    )]
    AlreadyUp(PathBuf),
    #[error(
        "the sandbox directory {0} must not contain ':' or ',' (systemd-nspawn options split on them)"
    )]
    BadDir(PathBuf),
}

/// Runs a `kubeup sandbox` subcommand.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    // Exec from the calling (main) thread: an exec from another thread
    // makes /proc/PID vanish for a moment while the kernel swaps the
    // thread-group leader.
    if let SandboxCommand::Launch { cgroups, command } = &args.command {
        return machine::launch_exec(cgroups, command);
    }
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("sandbox command panicked")?
}

fn run_blocking(args: SandboxArgs) -> anyhow::Result<()> {
    preflight()?;
    match args.command {
        SandboxCommand::Up {
            hosts,
            controllers,
            etcd_hosts,
            keep_on_failure,
        } => {
            if controllers + etcd_hosts > hosts {
                anyhow::bail!(
                    "--controllers {controllers} and --etcd-hosts {etcd_hosts} need at least as many --hosts"
                );
            }
            up(&args.dir, hosts, (controllers, etcd_hosts), keep_on_failure)
        }
        SandboxCommand::Down => down(&args.dir),
        SandboxCommand::Status { json } => status(&args.dir, json),
        SandboxCommand::Cut(h) => set_link(&args.dir, &h.host, false),
        SandboxCommand::Heal(h) => set_link(&args.dir, &h.host, true),
        SandboxCommand::Stop(h) => stop_host(&args.dir, &h.host),
        SandboxCommand::Start(h) => start_host(&args.dir, &h.host),
        SandboxCommand::Launch { .. } => unreachable!(),
    }
}

fn progress(msg: &str) {
    eprintln!("sandbox: {msg}");
}

fn require_tool(tool: &'static str, package: &'static str) -> Result<(), SandboxError> {
    which::which(tool)
        .map(|_| ())
        .map_err(|_| SandboxError::MissingTool { tool, package })
}

fn preflight() -> Result<(), SandboxError> {
    if std::env::consts::OS != "linux" {
        return Err(SandboxError::NotLinux(std::env::consts::OS));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::NotRoot);
    }
    require_tool("ip", "iproute2")
}

/// The sandbox directory made absolute (created if needed).
fn resolve_dir(dir: &Path, create: bool) -> anyhow::Result<PathBuf> {
    if create {
        fs::create_dir_all(dir)
            .with_context(|| format!("failed to create the sandbox directory {}", dir.display()))?;
    }
    let abs = match fs::canonicalize(dir) {
        Ok(p) => p,
        Err(_) => std::path::absolute(dir)
            .with_context(|| format!("failed to resolve {}", dir.display()))?,
    };
    let s = abs.to_string_lossy();
    if s.contains(':') || s.contains(',') {
        return Err(SandboxError::BadDir(abs).into());
    }
    Ok(abs)
}

/// Short hash of the directory: part of every name, so two sandboxes'
/// names never collide.
fn sandbox_id(dir: &Path) -> String {
    hex::encode(Sha256::digest(dir.as_os_str().as_encoded_bytes()))
        .chars()
        .take(6)
        .collect()
}

fn bridge_name(id: &str) -> String {
    format!("kb{id}")
}

fn new_host(st: &State, index: u32) -> anyhow::Result<Host> {
    let name = format!("kube-{}-{index}", st.id);
    Ok(Host {
        index,
        address: network::host_address(index).with_context(|| {
            format!(
                "host {index} is past the sandbox's {} hosts",
                network::MAX_HOSTS
            )
        })?,
        netns: name.clone(),
        veth: format!("kv{}-{index}", st.id),
        mac: network::mac(&st.id, index),
        root: state::sandbox_dir(&st.dir).join("hosts").join(&name),
        cgroups: cgroups::host_cgroup_dirs(&name)?,
        pid: None,
        host_key: None,
        name,
    })
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// `roles`: how many controllers, then how many dedicated etcd hosts.
fn up(dir: &Path, count: u32, roles: (u32, u32), keep_on_failure: bool) -> anyhow::Result<()> {
    let (controllers, etcd_hosts) = roles;
    require_tool("systemd-nspawn", "systemd-container")?;
    require_tool("ssh-keygen", "openssh-client")?;
    if !rootfs::rootfs_path().is_dir() {
        require_tool("debootstrap", "debootstrap")?;
        require_tool("chroot", "coreutils")?;
    }
    let started = Instant::now();
    let dir = resolve_dir(dir, true)?;
    let _lock = DirLock::acquire(&dir)?;
    if let Some(st) = State::load(&dir)?
        && (!st.hosts.is_empty() || st.bridge.is_some())
    {
        return Err(SandboxError::AlreadyUp(dir).into());
    }
    let id = sandbox_id(&dir);
    let bridge = bridge_name(&id);
    registry::claim(&registry::Entry {
        id: id.clone(),
        dir: dir.clone(),
        range: network::RANGE.into(),
        bridge: bridge.clone(),
    })?;
    let mut st = State {
        id: id.clone(),
        dir: dir.clone(),
        controllers,
        etcd_hosts,
        ..State::default()
    };
    st.save()?;
    let result = up_inner(&mut st, count, &bridge, started);
    if let Err(e) = result {
        if keep_on_failure {
            return Err(e.context(format!(
                "sandbox up failed; what was made is kept: remove it with `kubeup sandbox down --dir {}`",
                dir.display()
            )));
        }
        progress("up failed, removing what was made …");
        if let Err(d) = teardown(&dir) {
            return Err(e.context(format!(
                "sandbox up failed, and so did removing what it made ({d:#}); run `kubeup sandbox down --dir {}`",
                dir.display()
            )));
        }
        return Err(e);
    }
    Ok(())
}

fn up_inner(st: &mut State, count: u32, bridge: &str, started: Instant) -> anyhow::Result<()> {
    let rootfs = rootfs::ensure(&progress)?;
    st.rootfs = Some(rootfs.clone());
    let sdir = state::sandbox_dir(&st.dir);
    let client_key = machine::keygen(&sdir.join("id_ed25519"), "kubeup-sandbox")?;
    for name in SAVED_SYSCTLS {
        if let Ok(v) = fs::read_to_string(sysctl_path(name)) {
            st.saved_sysctls.insert((*name).into(), v.trim().to_owned());
        }
    }
    st.bridge = Some(Bridge {
        name: bridge.into(),
        address: format!("{}/{}", network::BRIDGE_ADDRESS, network::PREFIX_LEN),
    });
    st.save()?;
    network::ensure_bridge(bridge, &network::mac(&st.id, 0))?;

    for i in 1..=count {
        let h = new_host(st, i)?;
        st.hosts.push(h);
    }
    st.save()?;
    let all: Vec<_> = st
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address))
        .collect();
    for idx in 0..st.hosts.len() {
        let Some(h) = st.hosts.get(idx).cloned() else {
            break;
        };
        network::ensure_host_link(&h.netns, &h.veth, &h.mac, h.address, bridge)?;
        cgroups::create(&h.cgroups)?;
        let key = machine::prepare(&h, &rootfs, &all, &client_key)?;
        if let Some(host) = st.hosts.get_mut(idx) {
            host.host_key = Some(key);
        }
        st.save()?;
    }
    pin_neighbours(st, bridge)?;
    files::write_all(st)?;

    progress(&format!("booting {count} host(s) …"));
    for idx in 0..st.hosts.len() {
        let Some(host) = st.hosts.get_mut(idx) else {
            break;
        };
        host.pid = Some(machine::launch(host, &rootfs)?);
        st.save()?;
    }
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = st
            .hosts
            .iter()
            .map(|h| {
                let waiting =
                    s.spawn(move || machine::wait_ssh(h, h.pid.unwrap_or(0), BOOT_TIMEOUT));
                (&h.name, waiting)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, j)| match j.join() {
                Ok(r) => r.map_err(anyhow::Error::from),
                Err(_) => Err(anyhow::anyhow!("waiting for {name}'s sshd panicked")),
            })
            .collect()
    });
    for r in results {
        r?;
    }
    progress(&format!(
        "{count} host(s) up, sshd answering, in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    print!("{}", table(st, true));
    println!(
        "\ncluster.yaml: {}\nworkers:      {}\nssh:          ssh -i {} -o UserKnownHostsFile={} root@{}",
        st.dir.join("cluster.yaml").display(),
        st.dir.join("workers").display(),
        st.dir.join(files::KEY_FILE).display(),
        st.dir.join(files::KNOWN_HOSTS).display(),
        st.hosts
            .first()
            .map(|h| h.address.to_string())
            .unwrap_or_default()
    );
    Ok(())
}

/// Permanent ARP entries: the machine for every host, each host for every
/// other host and the bridge.
fn pin_neighbours(st: &State, bridge: &str) -> anyhow::Result<()> {
    let bridge_mac = network::mac(&st.id, 0);
    for h in &st.hosts {
        network::pin_neighbour(None, h.address, &h.mac, bridge)?;
        network::pin_neighbour(Some(&h.netns), network::BRIDGE_ADDRESS, &bridge_mac, "eth0")?;
        for o in st.hosts.iter().filter(|o| o.name != h.name) {
            network::pin_neighbour(Some(&h.netns), o.address, &o.mac, "eth0")?;
        }
    }
    Ok(())
}

fn load(dir: &Path) -> anyhow::Result<(PathBuf, State)> {
    let dir = resolve_dir(dir, false)?;
    let st = State::load(&dir)?.ok_or_else(|| SandboxError::NoSandbox(dir.clone()))?;
    Ok((dir, st))
}

fn find_host(st: &State, which: &str) -> Result<Host, SandboxError> {
    st.host(which).cloned().ok_or_else(|| SandboxError::NoHost {
        host: which.into(),
        dir: st.dir.clone(),
        names: st
            .hosts
            .iter()
            .map(|h| format!("{} ({})", h.name, h.index))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = resolve_dir(dir, false)?;
    if !state::state_path(&dir).exists() {
        registry::release(&sandbox_id(&dir))?;
        progress(&format!("no sandbox in {}; nothing to do", dir.display()));
        return Ok(());
    }
    let _lock = DirLock::acquire(&dir)?;
    teardown(&dir)?;
    progress(&format!(
        "sandbox in {} removed in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Removes everything the state names. Keeps going past errors and
/// reports them all at the end; the state file goes only when all is gone.
fn teardown(dir: &Path) -> anyhow::Result<()> {
    let Some(st) = State::load(dir)? else {
        return Ok(());
    };
    let mut errors: Vec<String> = Vec::new();
    let stops: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = st
            .hosts
            .iter()
            .map(|h| {
                let stopping = s.spawn(move || machine::stop(h, Duration::from_secs(2)));
                (&h.name, stopping)
            })
            .collect();
        hs.into_iter()
            .map(|(name, j)| match j.join() {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("stopping {name} panicked")),
            })
            .collect()
    });
    for r in stops {
        if let Err(e) = r {
            errors.push(e);
        }
    }
    for h in &st.hosts {
        if let Err(e) = network::delete_link(&h.veth) {
            errors.push(e.to_string());
        }
        if let Err(e) = network::delete_netns(&h.netns) {
            errors.push(e.to_string());
        }
    }
    unmount_under(&state::sandbox_dir(dir), &mut errors);
    if let Some(b) = &st.bridge
        && let Err(e) = network::delete_link(&b.name)
    {
        errors.push(e.to_string());
    }
    for (name, value) in &st.saved_sysctls {
        let path = sysctl_path(name);
        let now = fs::read_to_string(&path).unwrap_or_default();
        if now.trim() != value
            && let Err(e) = fs::write(&path, value)
        {
            errors.push(format!("failed to restore {name} to {value}: {e}"));
        }
    }
    let hosts_dir = state::sandbox_dir(dir).join("hosts");
    if let Err(e) = fs::remove_dir_all(&hosts_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errors.push(format!("failed to remove {}: {e}", hosts_dir.display()));
    }
    if !errors.is_empty() {
        bail!(
            "failed to remove parts of the sandbox in {}:\n  {}\nfix these and run `kubeup sandbox down --dir {}` again",
            dir.display(),
            errors.join("\n  "),
            dir.display()
        );
    }
    let _ = fs::remove_file(dir.join(files::KNOWN_HOSTS));
    State::remove(dir)?;
    registry::release(&st.id)?;
    Ok(())
}

/// Unmounts anything left mounted under `root` (nspawn mounts in its own
/// namespace, so normally nothing).
fn unmount_under(root: &Path, errors: &mut Vec<String>) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort();
    for p in points.iter().rev() {
        if let Err(e) = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
            errors.push(format!("failed to unmount {}: {e}", p.display()));
        }
    }
}

fn host_state(h: &Host) -> &'static str {
    if !machine::is_running(h) {
        "stopped"
    } else if network::link_is_up(&h.veth) == Some(false) {
        "link cut"
    } else {
        "running"
    }
}

fn table(st: &State, probe: bool) -> String {
    let ssh: Vec<bool> = if probe {
        std::thread::scope(|s| {
            let hs: Vec<_> = st
                .hosts
                .iter()
                .map(|h| s.spawn(move || machine::ssh_answers(h.address, Duration::from_secs(1))))
                .collect();
            hs.into_iter().map(|j| j.join().unwrap_or(false)).collect()
        })
    } else {
        vec![false; st.hosts.len()]
    };
    let mut out = format!(
        "{:<16} {:<14} {:<10} {:<4} {}\n",
        "HOST", "ADDRESS", "STATE", "SSH", "ROLE"
    );
    for (h, ssh) in st.hosts.iter().zip(ssh) {
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:<10} {:<4} {}",
            h.name,
            h.address,
            host_state(h),
            if ssh { "yes" } else { "no" },
            st.role(h.index)
        );
    }
    out
}

fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let (_, st) = load(dir)?;
    if json {
        let hosts: Vec<_> = st
            .hosts
            .iter()
            .map(|h| {
                serde_json::json!({
                    "name": h.name,
                    "index": h.index,
                    "address": h.address,
                    "state": host_state(h),
                    "sshAnswering": machine::ssh_answers(h.address, Duration::from_secs(1)),
                    "hostKey": h.host_key,
                    "pid": h.pid,
                    "netns": h.netns,
                    "veth": h.veth,
                })
            })
            .collect();
        let out = serde_json::json!({
            "dir": st.dir,
            "id": st.id,
            "bridge": st.bridge,
            "privateKeyFile": st.dir.join(files::KEY_FILE),
            "knownHosts": st.dir.join(files::KNOWN_HOSTS),
            "clusterYaml": st.dir.join("cluster.yaml"),
            "hosts": hosts,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&st, true));
    }
    Ok(())
}

fn set_link(dir: &Path, which: &str, up: bool) -> anyhow::Result<()> {
    let (dir, st) = load(dir)?;
    let _lock = DirLock::acquire(&dir)?;
    let h = find_host(&st, which)?;
    network::set_link(&h.veth, up)?;
    progress(&format!(
        "{} ({}): link {}",
        h.name,
        h.address,
        if up { "restored" } else { "cut" }
    ));
    Ok(())
}

fn stop_host(dir: &Path, which: &str) -> anyhow::Result<()> {
    let (dir, mut st) = load(dir)?;
    let _lock = DirLock::acquire(&dir)?;
    let h = find_host(&st, which)?;
    machine::stop(&h, Duration::from_secs(10))?;
    if let Some(m) = st.host_mut(&h.name) {
        m.pid = None;
    }
    st.save()?;
    progress(&format!("{} ({}): stopped", h.name, h.address));
    Ok(())
}

fn start_host(dir: &Path, which: &str) -> anyhow::Result<()> {
    require_tool("systemd-nspawn", "systemd-container")?;
    let started = Instant::now();
    let (dir, mut st) = load(dir)?;
    let _lock = DirLock::acquire(&dir)?;
    let h = find_host(&st, which)?;
    if machine::is_running(&h) {
        progress(&format!("{} ({}): already running", h.name, h.address));
        return Ok(());
    }
    let rootfs = st.rootfs.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "the sandbox state in {} names no rootfs; run `kubeup sandbox down` and `up` again",
            dir.display()
        )
    })?;
    let bridge = st
        .bridge
        .as_ref()
        .map(|b| b.name.clone())
        .unwrap_or_else(|| bridge_name(&st.id));
    network::ensure_host_link(&h.netns, &h.veth, &h.mac, h.address, &bridge)?;
    cgroups::create(&h.cgroups)?;
    let pid = machine::launch(&h, &rootfs)?;
    if let Some(m) = st.host_mut(&h.name) {
        m.pid = Some(pid);
    }
    st.save()?;
    machine::wait_ssh(&h, pid, BOOT_TIMEOUT)?;
    progress(&format!(
        "{} ({}): started, sshd answering after {:.1} s",
        h.name,
        h.address,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_fit_interface_limits() {
        let a = sandbox_id(Path::new("/tmp/a"));
        let b = sandbox_id(Path::new("/tmp/b"));
        assert_eq!(a.len(), 6);
        assert_ne!(a, b);
        assert!(bridge_name(&a).len() <= 15);
        assert!(format!("kv{a}-{}", network::MAX_HOSTS).len() <= 15);
    }

    #[test]
    fn precondition_errors_say_what_to_do() {
        assert!(SandboxError::NotRoot.to_string().contains("needs root"));
        let e = SandboxError::MissingTool {
            tool: "systemd-nspawn",
            package: "systemd-container",
        };
        assert!(e.to_string().contains("apt-get install systemd-container"));
    }

    #[test]
    fn cli_parses() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            sandbox: SandboxArgs,
        }
        let c = Cli::try_parse_from(["kubeup", "up", "--hosts", "2", "--dir", "/tmp/x"]).unwrap();
        assert!(matches!(
            c.sandbox.command,
            SandboxCommand::Up { hosts: 2, .. }
        ));
        assert_eq!(c.sandbox.dir, PathBuf::from("/tmp/x"));
        let c = Cli::try_parse_from(["kubeup", "--dir", "/d", "cut", "2"]).unwrap();
        assert!(
            matches!(c.sandbox.command, SandboxCommand::Cut(HostArg { ref host }) if host == "2")
        );
        assert!(Cli::try_parse_from(["kubeup", "up", "--hosts", "0"]).is_err());
    }
}
