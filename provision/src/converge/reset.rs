//! Undo everything kubeup installed on a host: units stopped and disabled,
//! every listed file removed, data directories, kube-proxy's iptables rules
//! and CNI links gone. Tolerates a host where `up` never ran or half ran.

use super::{ConvergeError, ssh_err};
use crate::hostplan::{Unit, layout};
use crate::ssh::{Command, Session};

/// Reset the host; returns the paths removed.
pub async fn reset_host(session: &Session) -> Result<Vec<String>, ConvergeError> {
    let mut units: Vec<String> = Unit::CONTROLLER.iter().rev().map(|u| u.service()).collect();
    units.insert(0, Unit::Flannel.service());
    let units = units.join(" ");
    let data_dirs = layout::DATA_DIRS.join(" ");
    let list = layout::INSTALLED_LIST;
    let script = format!(
        r#"set -u
systemctl stop {units} 2>/dev/null
systemctl disable --quiet {units} 2>/dev/null
# Containers outlive containerd (KillMode=process): end their shims too.
pkill -TERM -x containerd-shim 2>/dev/null; sleep 0.2; pkill -KILL -x containerd-shim 2>/dev/null
for m in $(awk '$2 ~ "^/var/lib/kubelet/|^/run/containerd/|^/var/lib/containerd/" {{print $2}}' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null; done
removed=""
if [ -f {list} ]; then
  while IFS= read -r f; do [ -n "$f" ] && [ -e "$f" -o -L "$f" ] && rm -f -- "$f" && removed="$removed $f"; done < {list}
fi
for d in {data_dirs} /etc/cni/net.d /etc/containerd; do
  if [ -d "$d" ]; then
    if mountpoint -q "$d"; then find "$d" -mindepth 1 -delete 2>/dev/null; else rm -rf -- "$d"; fi
    removed="$removed $d"
  fi
done
if command -v iptables-save >/dev/null; then
  for t in iptables ip6tables; do
    $t-save 2>/dev/null | grep -v -e KUBE- -e CNI- -e FLANNEL- -e 'kubernetes' | $t-restore 2>/dev/null
  done
fi
for l in cni0 flannel.1 kube-ipvs0; do ip link del "$l" 2>/dev/null; done
ip -o link show type veth 2>/dev/null | awk -F': ' '{{print $2}}' | cut -d@ -f1 | grep '^veth' | while read -r v; do ip link del "$v" 2>/dev/null; done
systemctl stop kubepods.slice 2>/dev/null
systemctl daemon-reload
systemctl reset-failed 2>/dev/null
echo $removed
true
"#
    );
    let out = session
        .run(
            &Command::shell(script)
                .privileged()
                .timeout(std::time::Duration::from_secs(120)),
        )
        .await
        .map_err(ssh_err(session.host(), "reset"))?;
    Ok(out
        .stdout_str()
        .split_whitespace()
        .map(str::to_string)
        .collect())
}
