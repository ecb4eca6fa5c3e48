//! systemd units: enable, start what is stopped, restart what changed.

use std::collections::BTreeSet;

use super::{Changes, ConvergeError, ssh_err};
use crate::hostplan::Unit;
use crate::ssh::{Command, Session};

/// `ActiveState` of each unit (`active`, `inactive`, `failed`, …).
pub async fn unit_status(
    session: &Session,
    units: &[Unit],
) -> Result<Vec<(Unit, String)>, ConvergeError> {
    let names: Vec<String> = units.iter().map(|u| u.service()).collect();
    let out = session
        .output(
            &Command::new("systemctl")
                .arg("is-active")
                .args(&names)
                .privileged(),
        )
        .await
        .map_err(ssh_err(session.host(), "unit status"))?;
    let states: Vec<String> = out.stdout_str().lines().map(str::to_string).collect();
    Ok(units
        .iter()
        .copied()
        .zip(
            states
                .into_iter()
                .chain(std::iter::repeat("unknown".to_string())),
        )
        .collect())
}

/// Enable all `units` (in order), start the stopped ones and restart those
/// in `restart`; a `daemon-reload` first when unit files changed.
pub async fn ensure_units(
    session: &Session,
    units: &[Unit],
    restart: &BTreeSet<Unit>,
    units_changed: bool,
    dry_run: bool,
) -> Result<Changes, ConvergeError> {
    let status = unit_status(session, units).await?;
    apply_units(session, &status, units, restart, units_changed, dry_run).await
}

/// [`ensure_units`] from a `status` the caller read (beside other reads).
pub async fn apply_units(
    session: &Session,
    status: &[(Unit, String)],
    units: &[Unit],
    restart: &BTreeSet<Unit>,
    units_changed: bool,
    dry_run: bool,
) -> Result<Changes, ConvergeError> {
    let mut changes = Changes::default();
    let mut actions = vec![];
    for (unit, state) in status {
        if state != "active" && state != "activating" {
            changes.started.push(unit.name().to_string());
            actions.push(("start", *unit));
        } else if restart.contains(unit) {
            changes.restarted.push(unit.name().to_string());
            // A new backend list must not cut the connections it carries.
            let verb = if unit.reloads() {
                "reload-or-restart"
            } else {
                "restart"
            };
            actions.push((verb, *unit));
        }
    }
    if dry_run || (actions.is_empty() && !units_changed) {
        return Ok(changes);
    }
    let names: Vec<String> = units.iter().map(|u| u.service()).collect();
    // A reload only when a loaded unit's file or drop-in changed on disk
    // (systemd then reports NeedDaemonReload; `show` also loads a unit
    // named for the first time from its new file): a reload costs ~100 ms
    // of the kubelet's start on an idle host, more on a busy one.
    let mut script = format!(
        "set -e\nif systemctl show -p NeedDaemonReload --value {} | grep -qx yes; then systemctl daemon-reload; fi\n",
        names.join(" ")
    );
    // One systemctl per verb; --no-block: the caller waits on what matters
    // (readyz, Node Ready) instead of systemd's view of "started".
    for verb in ["start", "restart", "reload-or-restart"] {
        let these: Vec<String> = actions
            .iter()
            .filter(|(v, _)| *v == verb)
            .map(|(_, u)| u.service())
            .collect();
        if !these.is_empty() {
            script.push_str(&format!(
                "systemctl {verb} --no-block {}\n",
                these.join(" ")
            ));
        }
    }
    // Enabled (for the next boot) after the start, off the kubelet's path;
    // the units were just loaded, so no second reload (a few hundred ms on
    // a busy host).
    script.push_str(&format!(
        "systemctl enable --quiet --no-reload {}\n",
        names.join(" ")
    ));
    session
        .run(&Command::shell(script).privileged())
        .await
        .map_err(ssh_err(session.host(), "start units"))?;
    Ok(changes)
}
