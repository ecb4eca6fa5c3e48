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
/// in `restart`; a `daemon-reload` first when a loaded unit's file changed.
/// One round trip: the host reads the units' states and acts on them (a
/// dry run only reads them).
pub async fn ensure_units(
    session: &Session,
    units: &[Unit],
    restart: &BTreeSet<Unit>,
    units_changed: bool,
    dry_run: bool,
) -> Result<Changes, ConvergeError> {
    if dry_run {
        let status = unit_status(session, units).await?;
        return Ok(planned(&status, restart));
    }
    let out = session
        .run(&Command::shell(units_script(units, restart, units_changed)).privileged())
        .await
        .map_err(ssh_err(session.host(), "start units"))?;
    Ok(acted(&out.stdout_str()))
}

/// What [`ensure_units`] would do, from the units' states.
/// Start `unit` now, without waiting for it, when it is not running, its
/// program `binary` is in place, and systemd has its unit file as it is on
/// disk (loaded now or fresh; never an older definition): a join starts
/// containerd as soon as its binary and configuration are there, so the
/// kubelet does not wait for the runtime's start later. Whether it was
/// started (nothing else is touched; a running unit is left to
/// [`ensure_units`]).
pub async fn start_if_idle(
    session: &Session,
    unit: Unit,
    binary: &str,
) -> Result<bool, ConvergeError> {
    let binary = crate::ssh::quote(binary).map_err(ssh_err(session.host(), "start units"))?;
    let script = start_if_idle_script(&unit.service(), &binary);
    let out = session
        .run(&Command::shell(script).privileged())
        .await
        .map_err(ssh_err(session.host(), "start units"))?;
    Ok(out.stdout_str().trim() == "started")
}

/// [`start_if_idle`]'s script; `binary` quoted.
fn start_if_idle_script(service: &str, binary: &str) -> String {
    // One systemctl: its state and whether systemd holds an older file.
    format!(
        "s=$(systemctl show -p ActiveState -p NeedDaemonReload {service} 2>/dev/null | sort | tr '\\n' ' ')\n\
         case \"$s\" in\n\
         \x20 'ActiveState=inactive NeedDaemonReload=no '|'ActiveState=failed NeedDaemonReload=no ')\n\
         \x20   if [ -x {binary} ]; then systemctl start --no-block {service} && echo started; fi;;\n\
         esac\n\
         true\n"
    )
}

fn planned(status: &[(Unit, String)], restart: &BTreeSet<Unit>) -> Changes {
    let mut changes = Changes::default();
    for (unit, state) in status {
        if !running(state) {
            changes.started.push(unit.name().to_string());
        } else if restart.contains(unit) {
            changes.restarted.push(unit.name().to_string());
        }
    }
    changes
}

/// A unit in this state needs no start.
fn running(state: &str) -> bool {
    state == "active" || state == "activating"
}

/// The host's side of [`ensure_units`]: each unit not running is started,
/// each running one in `restart` restarted (reloaded where a reload
/// carries the change without cutting connections); it prints what it did
/// (`started`/`restarted` lines of unit names). Unit names are kubeup's own.
fn units_script(units: &[Unit], restart: &BTreeSet<Unit>, units_changed: bool) -> String {
    let names: Vec<String> = units.iter().map(|u| u.service()).collect();
    let all = names.join(" ");
    let pattern = |pick: &dyn Fn(&Unit) -> bool| {
        let these: Vec<String> = restart
            .iter()
            .filter(|u| pick(u))
            .map(|u| u.service())
            .collect();
        if these.is_empty() {
            "kubeup-none".to_string()
        } else {
            these.join("|")
        }
    };
    format!(
        "set -e\n\
         start=; restart=; reload=; stale=\n\
         # One systemctl for every unit's state and whether systemd holds an older\n\
         # file of it (NeedDaemonReload; `show` loads a unit named for the first time\n\
         # from its new file): a pair per unit, in the order asked.\n\
         set -- $(systemctl show -p Id -p ActiveState -p NeedDaemonReload {all} 2>/dev/null | awk -F= -v want='{all}' '\n\
         \x20 function flush() {{ if (id != \"\") {{ st[id] = a; nr[id] = r }}; id = \"\"; a = \"\"; r = \"\" }}\n\
         \x20 $1 == \"Id\" {{ id = $2 }} $1 == \"ActiveState\" {{ a = $2 }} $1 == \"NeedDaemonReload\" {{ r = $2 }}\n\
         \x20 /^$/ {{ flush() }}\n\
         \x20 END {{ flush(); n = split(want, w, \" \"); for (i = 1; i <= n; i++) print ((w[i] in st) ? st[w[i]] : \"unknown\"), ((w[i] in nr) ? nr[w[i]] : \"no\") }}')\n\
         for u in {all}; do\n\
         \x20 st=${{1:-unknown}}; [ \"${{2:-no}}\" = yes ] && stale=1; [ $# -ge 2 ] && shift 2\n\
         \x20 case \"$st\" in\n\
         \x20   active|activating) case \"$u\" in {restarts}) restart=\"$restart $u\";; {reloads}) reload=\"$reload $u\";; esac;;\n\
         \x20   *) start=\"$start $u\";;\n\
         \x20 esac\n\
         done\n\
         if [ -n \"$start$restart$reload\" ] || {changed}; then\n\
         \x20 # A reload only when a loaded unit's file or drop-in changed on disk: it\n\
         \x20 # costs ~100 ms of the kubelet's start on an idle host.\n\
         \x20 if [ -n \"$stale\" ]; then systemctl daemon-reload; fi\n\
         \x20 # --no-block: the caller waits on what matters (readyz, Node Ready).\n\
         \x20 if [ -n \"$start\" ]; then systemctl start --no-block $start; fi\n\
         \x20 if [ -n \"$restart\" ]; then systemctl restart --no-block $restart; fi\n\
         \x20 if [ -n \"$reload\" ]; then systemctl reload-or-restart --no-block $reload; fi\n\
         \x20 # Enabled for the next boot after the start, off the kubelet's path.\n\
         \x20 systemctl enable --quiet --no-reload {all}\n\
         fi\n\
         echo \"started $start\"\n\
         echo \"restarted $restart $reload\"\n",
        // Restarted outright, or (a new backend list must not cut the
        // connections it carries) reloaded.
        restarts = pattern(&|u: &Unit| !u.reloads()),
        reloads = pattern(&|u: &Unit| u.reloads()),
        changed = if units_changed { "true" } else { "false" },
    )
}

/// The script's account of what it did, as [`Changes`].
fn acted(stdout: &str) -> Changes {
    let mut changes = Changes::default();
    let names = |l: &str| -> Vec<String> {
        l.split_whitespace()
            .map(|s| s.strip_suffix(".service").unwrap_or(s).to_string())
            .collect()
    };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("started") {
            changes.started.extend(names(rest));
        } else if let Some(rest) = line.strip_prefix("restarted") {
            changes.restarted.extend(names(rest));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the script `script(dir)` makes with a stand-in `systemctl`
    /// (in `dir`) first on the PATH: its `show` runs the shell text `show`,
    /// every other call is logged. The script's stdout, and the calls.
    fn with_stand_in_systemctl(
        show: &str,
        script: impl FnOnce(&std::path::Path) -> String,
    ) -> (String, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let fake = dir.path().join("systemctl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n  show) {show};;\n  *) echo \"$*\" >> {};;\nesac\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(dir.path()))
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        (String::from_utf8_lossy(&out.stdout).into_owned(), calls)
    }

    /// The host's script against a `systemctl` whose `show` answers each
    /// unit's ActiveState from `states` (in order) and its
    /// NeedDaemonReload with `reload_needed`: what it did, and what it
    /// reported.
    fn run_script(
        units: &[Unit],
        restart: &BTreeSet<Unit>,
        units_changed: bool,
        states: &str,
        reload_needed: &str,
    ) -> (Changes, String) {
        let show = format!(
            "shift 7; states='{states}'\n    for u in \"$@\"; do st=${{states%% *}}; states=${{states#* }}\n      printf 'ActiveState=%s\\nId=%s\\nNeedDaemonReload=%s\\n\\n' \"$st\" \"$u\" {reload_needed}; done",
            states = states.replace("\\n", " ")
        );
        let (stdout, calls) =
            with_stand_in_systemctl(&show, |_| units_script(units, restart, units_changed));
        (acted(&stdout), calls)
    }

    /// `start_if_idle`'s script against a stand-in `systemctl` (`active`:
    /// its ActiveState; `reload`: its NeedDaemonReload) and a binary
    /// present or not: whether it said "started", and the calls it made
    /// beside the two questions.
    fn run_start_if_idle(active: bool, reload: &str, binary: bool) -> (bool, String) {
        use std::os::unix::fs::PermissionsExt;
        let show = format!(
            "printf 'NeedDaemonReload={reload}\\nActiveState={}\\n'",
            if active { "active" } else { "inactive" }
        );
        let (stdout, calls) = with_stand_in_systemctl(&show, |dir| {
            let bin = dir.join("containerd");
            if binary {
                std::fs::write(&bin, "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            start_if_idle_script("containerd.service", bin.to_str().unwrap())
        });
        (stdout.trim() == "started", calls)
    }

    #[test]
    fn an_idle_unit_starts_early_only_with_its_binary_and_its_current_file() {
        assert_eq!(
            run_start_if_idle(false, "no", true),
            (true, "start --no-block containerd.service\n".to_string())
        );
        // Running: left to ensure_units (a restart it may owe).
        assert_eq!(run_start_if_idle(true, "no", true), (false, String::new()));
        // Its binary not uploaded yet.
        assert_eq!(
            run_start_if_idle(false, "no", false),
            (false, String::new())
        );
        // Loaded from an older file: starting it would run that one.
        assert_eq!(
            run_start_if_idle(false, "yes", true),
            (false, String::new())
        );
    }

    #[test]
    fn stopped_units_start_running_ones_restart_or_reload_and_all_are_enabled() {
        let units = [
            Unit::Containerd,
            Unit::Kubelet,
            Unit::ApiLb,
            Unit::KubeProxy,
        ];
        let restart = BTreeSet::from([Unit::Kubelet, Unit::ApiLb, Unit::Containerd]);
        let (changes, calls) = run_script(
            &units,
            &restart,
            false,
            "inactive\\nactive\\nactive\\nfailed\\n",
            "no",
        );
        assert_eq!(changes.started, ["containerd", "kube-proxy"]);
        assert_eq!(changes.restarted, ["kubelet", "kubeup-apiserver-lb"]);
        let lines: Vec<&str> = calls.lines().collect();
        assert_eq!(
            lines,
            [
                "start --no-block containerd.service kube-proxy.service",
                "restart --no-block kubelet.service",
                "reload-or-restart --no-block kubeup-apiserver-lb.service",
                "enable --quiet --no-reload containerd.service kubelet.service kubeup-apiserver-lb.service kube-proxy.service",
            ],
            "no daemon-reload: no loaded unit changed"
        );
    }

    #[test]
    fn a_changed_loaded_unit_is_reloaded_and_nothing_to_do_touches_nothing() {
        let units = [Unit::Kubelet];
        let (changes, calls) = run_script(&units, &BTreeSet::new(), true, "active\\n", "yes");
        assert!(changes.started.is_empty() && changes.restarted.is_empty());
        assert_eq!(
            calls.lines().collect::<Vec<_>>(),
            [
                "daemon-reload",
                "enable --quiet --no-reload kubelet.service"
            ]
        );
        let (changes, calls) = run_script(&units, &BTreeSet::new(), false, "active\\n", "yes");
        assert!(changes.started.is_empty() && changes.restarted.is_empty());
        assert_eq!(calls, "", "running, unchanged, nothing owed: no call");
    }
}
