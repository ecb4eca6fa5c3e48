//! Restarts owed to a phase that finished before the operator stopped.
//!
//! `Installing` may replace a binary a running unit uses; the restart that
//! needs happens in `Starting`. If the operator dies between the two, the
//! resumed join starts at `Starting` knowing nothing of the new binary, and
//! the unit would keep running the old one. So the units to restart are
//! written on the host (`/var/lib/kubeup/restart-pending`) before
//! `Installing` is done, read back by `Starting`, and removed once the
//! units were (re)started.

use std::collections::BTreeSet;

use kubeup_provision::hostplan::Unit;
use kubeup_provision::ssh::{Command, Session};

use crate::error::{Error, Result};

pub const PENDING: &str = "/var/lib/kubeup/restart-pending";

/// Units a worker may have to restart, by name.
const KNOWN: [Unit; 4] = [
    Unit::Containerd,
    Unit::Kubelet,
    Unit::KubeProxy,
    Unit::Flannel,
];

/// The units named in the file's text (unknown names ignored).
pub fn parse(text: &str) -> BTreeSet<Unit> {
    text.lines()
        .filter_map(|l| KNOWN.iter().find(|u| u.name() == l.trim()).copied())
        .collect()
}

/// Remember `units` on the host (adding to what is there), in one round
/// trip: the names are added on the host and the file replaced by rename.
pub async fn record(session: &Session, units: &BTreeSet<Unit>) -> Result<()> {
    if units.is_empty() {
        return Ok(());
    }
    // Unit names are kubeup's own (`Unit::name`): nothing to quote.
    let names: Vec<&str> = units.iter().map(|u| u.name()).collect();
    let script = format!(
        "set -e; mkdir -p {dir}; t=$(mktemp {PENDING}.XXXXXX); \
         {{ cat {PENDING} 2>/dev/null || true; printf '%s\\n' {names}; }} | sort -u > \"$t\"; \
         chmod 644 \"$t\"; mv -f \"$t\" {PENDING}",
        dir = kubeup_provision::hostplan::layout::STATE,
        names = names.join(" "),
    );
    session
        .run(&Command::shell(script).privileged())
        .await
        .map(|_| ())
        .map_err(Error::ssh(session.host()))
}

/// What is owed (the file stays until [`clear`]).
pub async fn take(session: &Session) -> Result<BTreeSet<Unit>> {
    let out = session
        .run(&Command::shell(format!("cat {PENDING} 2>/dev/null; true")).privileged())
        .await
        .map_err(Error::ssh(session.host()))?;
    Ok(parse(&out.stdout_str()))
}

/// The owed restarts happened.
pub async fn clear(session: &Session) -> Result<()> {
    session
        .run(&Command::shell(format!("rm -f {PENDING}")).privileged())
        .await
        .map(|_| ())
        .map_err(Error::ssh(session.host()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_read_and_unknown_names_ignored() {
        let units = BTreeSet::from([Unit::Kubelet, Unit::Containerd]);
        assert_eq!(parse("containerd\nkubelet\n"), units);
        assert_eq!(
            parse("kubelet\nrm -rf /\netcd\n"),
            BTreeSet::from([Unit::Kubelet])
        );
        assert!(parse("").is_empty());
    }
}
