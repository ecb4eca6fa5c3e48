//! Preflight: can this machine run the node components? One read-only
//! script gathers the facts; Rust judges them and reports every problem at
//! once, each with what to do.

use super::{ConvergeError, ssh_err};
use crate::hostplan::layout;
use crate::ssh::{Command, Session};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Controller,
    Worker,
    /// A dedicated etcd host: etcd alone, no container runtime or Node.
    Etcd,
}

impl Role {
    fn ports(self) -> &'static [u16] {
        match self {
            Role::Controller => &[2379, 2380, 6443, 7443, 10250, 10257, 10259],
            Role::Worker => &[7443, 10250, 10256],
            Role::Etcd => &[2379, 2380, 2381],
        }
    }
}

/// One preflight finding.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// A warning does not stop the run.
    pub fatal: bool,
    pub message: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PreflightReport {
    pub host: String,
    pub checks: Vec<Check>,
    /// Facts worth recording (os, kernel, hostname…).
    pub hostname: String,
    /// What a controller holding a virtual IP needs and the host lacks
    /// (`keepalived`, `curl`); judged by the caller, which knows whether
    /// the cluster has one.
    pub missing_for_vip: Vec<String>,
}

impl PreflightReport {
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok && c.fatal).collect()
    }

    pub fn warnings(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok && !c.fatal).collect()
    }

    /// One message listing every fatal problem.
    pub fn error_text(&self) -> Option<String> {
        let f = self.failures();
        if f.is_empty() {
            return None;
        }
        Some(
            f.iter()
                .map(|c| format!("  - {}: {}", c.name, c.message))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }
}

const FACTS: &str = r#"
. /etc/os-release 2>/dev/null; echo "os=${ID:-unknown} ${VERSION_ID:-}"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname 2>/dev/null || cat /etc/hostname)"
echo "systemd=$([ -d /run/systemd/system ] && echo yes || echo no)"
echo "swap=$(awk 'NR>1' /proc/swaps | wc -l)"
echo "overlay=$(grep -qw overlay /proc/filesystems && echo yes || echo no)"
echo "br_netfilter=$([ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo yes || echo no)"
echo "ip_forward_writable=$([ -w /proc/sys/net/ipv4/ip_forward ] && echo yes || echo no)"
echo "cgroup_ro=$(awk '$3 ~ /^cgroup/ && $4 ~ /(^|,)ro(,|$)/ {print $2}' /proc/mounts | tr '\n' ' ')"
for t in systemctl iptables ip mount sed awk sha256sum tar; do command -v $t >/dev/null || echo "missing_tool=$t"; done
echo "zstd=$(command -v zstd >/dev/null && echo yes || echo no)"
for t in haproxy keepalived curl; do echo "$t=$([ -x /usr/sbin/$t ] || [ -x /usr/bin/$t ] && echo yes || echo no)"; done
echo "time=$(date +%s)"
echo "disk_kb=$(df -Pk /var 2>/dev/null | awk 'NR==2 {print $4}')"
echo "mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
if command -v ss >/dev/null; then ss -Hltnp 2>/dev/null | awk '{print "listen=" $4 " " $6}'; else echo "no_ss=1"; fi
"#;

/// Node components that must not be running unless kubeup installed them:
/// a second kubelet or containerd would fight over the same sockets, ports
/// and cgroups, and `reset` would later stop something that is not ours.
const EXCLUSIVE: [&str; 2] = ["kubelet", "containerd"];

/// `foreign=NAME WHAT` for each of [`EXCLUSIVE`] that runs but is not
/// kubeup's: a process of that name whose executable is not under
/// kubeup's bundle directory, or an active unit of that name that the
/// installed list does not name.
fn foreign_components_script() -> String {
    format!(
        r#"for p in {names}; do
  foreign=
  for pid in $(pgrep -x "$p" 2>/dev/null); do
    case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in {opt}/*) ;; *) foreign="${{foreign:-process}} $pid";; esac
  done
  if [ -z "$foreign" ] && systemctl is-active --quiet "$p.service" 2>/dev/null \
     && ! grep -qxF "{systemd}/$p.service" {list} 2>/dev/null; then foreign="unit $p.service"; fi
  [ -z "$foreign" ] || echo "foreign=$p $foreign"
done
"#,
        names = EXCLUSIVE.join(" "),
        opt = layout::OPT,
        systemd = layout::SYSTEMD,
        list = layout::INSTALLED_LIST,
    )
}

/// Gather facts on the host and judge them for `role`.
pub async fn preflight(session: &Session, role: Role) -> Result<PreflightReport, ConvergeError> {
    let script = format!("{FACTS}{}", foreign_components_script());
    let out = session
        .run(&Command::shell(script).privileged())
        .await
        .map_err(ssh_err(session.host(), "preflight"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(judge(session.host(), &out.stdout_str(), role, now))
}

/// Pure: facts (key=value lines) → findings. Unit-tested.
pub fn judge(host: &str, facts: &str, role: Role, now: i64) -> PreflightReport {
    let get = |k: &str| {
        facts
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let all = |k: &str| -> Vec<String> {
        facts
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
            .collect()
    };
    let mut checks = vec![];
    let mut check = |name: &str, ok: bool, fatal: bool, message: String| {
        checks.push(Check {
            name: name.into(),
            ok,
            fatal,
            message,
        });
    };

    // What only a Node needs (a container runtime, forwarding, the local
    // load balancer) is no etcd host's concern.
    let etcd_only = role == Role::Etcd;
    let os = get("os");
    check(
        "os",
        os.starts_with("debian") || os.starts_with("ubuntu"),
        false,
        format!("{os}: kubeup is tested on Debian and Ubuntu"),
    );
    let arch = get("arch");
    check(
        "arch",
        arch == "x86_64",
        true,
        format!("{arch}: the bundle holds x86_64 binaries"),
    );
    check(
        "systemd",
        get("systemd") == "yes",
        true,
        "systemd is not running as init: kubeup manages components as systemd units".into(),
    );
    let swap: u32 = get("swap").parse().unwrap_or(0);
    check(
        "swap",
        swap == 0,
        false,
        format!(
            "{swap} swap device(s) active: the kubelet is configured to tolerate it (failSwapOn: false)"
        ),
    );
    check(
        "kernel modules",
        etcd_only || get("overlay") == "yes",
        true,
        "the overlay filesystem is not available: load the `overlay` module".into(),
    );
    check(
        "br_netfilter",
        etcd_only || get("br_netfilter") == "yes",
        false,
        "net.bridge.bridge-nf-call-iptables is absent: load `br_netfilter` if Services misbehave on bridged pods".into(),
    );
    check(
        "sysctl",
        etcd_only || get("ip_forward_writable") == "yes",
        true,
        "net.ipv4.ip_forward cannot be set: kubeup needs to enable forwarding".into(),
    );
    let ro = get("cgroup_ro");
    check(
        "cgroups",
        etcd_only || ro.is_empty(),
        true,
        format!("cgroup hierarchies mounted read-only ({ro}): containers cannot be created"),
    );
    for t in all("missing_tool") {
        check(
            "host tools",
            false,
            true,
            format!(
                "`{t}` is missing: install it (Debian: apt-get install iproute2 iptables coreutils systemd)"
            ),
        );
    }
    check(
        "zstd",
        get("zstd") != "no",
        false,
        "`zstd` is missing: binaries and images are sent uncompressed (about 3x the bytes; install zstd)".into(),
    );
    check(
        "haproxy",
        etcd_only || get("haproxy") == "yes",
        true,
        "`haproxy` is missing: every node reaches the apiservers through a local haproxy (Debian: apt-get install haproxy)".into(),
    );
    if let Ok(remote) = get("time").parse::<i64>() {
        let skew = (remote - now).abs();
        check(
            "clock",
            skew <= 30,
            true,
            format!(
                "the clock is {skew}s off the workstation's: certificates may look not yet valid; sync time (chrony/systemd-timesyncd)"
            ),
        );
    }
    let disk_gb = get("disk_kb").parse::<u64>().unwrap_or(0) / 1024 / 1024;
    let need = if role == Role::Worker { 1 } else { 2 };
    check(
        "disk",
        disk_gb >= need,
        true,
        format!("{disk_gb} GiB free on /var, {need} GiB needed"),
    );
    if get("no_ss").is_empty() {
        let ours = [
            "etcd",
            "kube-apiserver",
            "kube-controller",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "hyperkube",
            "haproxy",
        ];
        for line in all("listen") {
            let (addr, proc_) = line.split_once(' ').unwrap_or((&line, ""));
            let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            if role.ports().contains(&port) && !ours.iter().any(|o| proc_.contains(o)) {
                check(
                    "ports",
                    false,
                    true,
                    format!("port {port} is in use by {proc_}: stop it or choose another machine"),
                );
            }
        }
    } else {
        check(
            "ports",
            false,
            false,
            "`ss` is missing, ports not checked (install iproute2)".into(),
        );
    }
    for line in all("foreign") {
        let (name, what) = line.split_once(' ').unwrap_or((&line, ""));
        check(
            "existing components",
            false,
            true,
            format!(
                "host already runs {name} not installed by kubeup ({what}); remove it or reset the host"
            ),
        );
    }
    PreflightReport {
        host: host.to_string(),
        checks,
        hostname: get("hostname"),
        missing_for_vip: ["keepalived", "curl"]
            .into_iter()
            .filter(|t| get(t) != "yes")
            .map(str::to_string)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "os=debian 12\narch=x86_64\nhostname=node1\nhaproxy=yes\nsystemd=yes\nswap=0\noverlay=yes\nbr_netfilter=yes\nip_forward_writable=yes\ncgroup_ro=\ntime=1000\ndisk_kb=99999999\nlisten=0.0.0.0:22 users:((\"sshd\",pid=1,fd=3))\n";

    #[test]
    fn a_good_host_passes() {
        let r = judge("h", GOOD, Role::Controller, 1000);
        assert!(r.failures().is_empty(), "{:?}", r.failures());
        assert_eq!(r.hostname, "node1");
    }

    #[test]
    fn every_problem_is_reported() {
        let bad = GOOD
            .replace("arch=x86_64", "arch=riscv64")
            .replace("time=1000", "time=5000")
            .replace("cgroup_ro=", "cgroup_ro=/sys/fs/cgroup/memory ")
            + "missing_tool=iptables\nlisten=0.0.0.0:6443 users:((\"nginx\",pid=9,fd=3))\n";
        let r = judge("h", &bad, Role::Controller, 1000);
        let names: Vec<&str> = r.failures().iter().map(|c| c.name.as_str()).collect();
        for n in ["arch", "clock", "cgroups", "host tools", "ports"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(r.error_text().unwrap().contains("port 6443 is in use by"));
    }

    #[test]
    fn our_own_listeners_are_fine_on_a_rerun() {
        let rerun = format!("{GOOD}listen=*:6443 users:((\"kube-apiserver\",pid=9,fd=3))\n");
        assert!(
            judge("h", &rerun, Role::Controller, 1000)
                .failures()
                .is_empty()
        );
    }

    #[test]
    fn an_etcd_host_needs_no_runtime_or_load_balancer_but_its_ports() {
        let bare = GOOD
            .replace("overlay=yes", "overlay=no")
            .replace("haproxy=yes", "haproxy=no");
        assert!(judge("h", &bare, Role::Etcd, 1000).failures().is_empty());
        assert!(
            !judge("h", &bare, Role::Controller, 1000)
                .failures()
                .is_empty()
        );
        let busy = format!("{GOOD}listen=0.0.0.0:2380 users:((\"nginx\",pid=9,fd=3))\n");
        let r = judge("h", &busy, Role::Etcd, 1000);
        assert!(
            r.error_text().unwrap_or_default().contains("port 2380"),
            "{r:?}"
        );
    }

    #[test]
    fn a_kubelet_or_containerd_kubeup_did_not_install_is_refused() {
        let facts = format!(
            "{GOOD}foreign=kubelet process 4242\nforeign=containerd unit containerd.service\n"
        );
        let r = judge("h", &facts, Role::Worker, 1000);
        let text = r.error_text().unwrap_or_default();
        for name in ["kubelet", "containerd"] {
            let want = format!("host already runs {name} not installed by kubeup");
            assert!(text.contains(&want), "{text}");
        }
        assert!(text.contains("remove it or reset the host"), "{text}");
        assert!(text.contains("process 4242"), "{text}");
    }

    #[test]
    fn the_foreign_component_probe_trusts_only_kubeup_paths() {
        let script = foreign_components_script();
        assert!(script.contains("/opt/kubeup/*) ;;"), "{script}");
        assert!(
            script.contains("/etc/systemd/system/$p.service\" /var/lib/kubeup/installed.list"),
            "{script}"
        );
    }

    #[test]
    fn a_host_without_zstd_is_a_warning_only() {
        let r = judge("h", &format!("{GOOD}zstd=no\n"), Role::Worker, 1000);
        assert!(r.failures().is_empty(), "{:?}", r.failures());
        let w = r.warnings();
        assert!(
            w.iter()
                .any(|c| c.name == "zstd" && c.message.contains("uncompressed")),
            "{w:?}"
        );
        let with = judge("h", &format!("{GOOD}zstd=yes\n"), Role::Worker, 1000);
        assert!(!with.warnings().iter().any(|c| c.name == "zstd"));
    }
}
