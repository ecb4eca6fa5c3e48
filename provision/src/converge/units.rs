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
    let mut changes = Changes::default();
    let status = unit_status(session, units).await?;
    let mut actions = vec![];
    for (unit, state) in &status {
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
    let mut script = String::from("set -e\nsystemctl daemon-reload\n");
    // The units were just loaded: enabling (for the next boot) needs no
    // second reload, which costs a few hundred ms on a busy host.
    script.push_str(&format!(
        "systemctl enable --quiet --no-reload {}\n",
        names.join(" ")
    ));
    for (verb, unit) in &actions {
        // --no-block: the caller waits on what matters (readyz, Node Ready)
        // instead of systemd's view of "started".
        script.push_str(&format!("systemctl {verb} --no-block {}\n", unit.service()));
    }
    session
        .run(&Command::shell(script).privileged())
        .await
        .map_err(ssh_err(session.host(), "start units"))?;
    Ok(changes)
}
