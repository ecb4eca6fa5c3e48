//! Helpers shared by the end-to-end test files: running commands, the
//! bundle's tools, polling, and a guard that removes the sandbox.
// Each test file uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KUBEUP: &str = env!("CARGO_BIN_EXE_kubeup");

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {program}: {e}"))
}

pub fn describe(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn kubeup(args: &[&str]) -> Output {
    run(KUBEUP, args)
}

pub fn kubeup_ok(args: &[&str]) -> String {
    let o = kubeup(args);
    assert!(
        o.status.success(),
        "kubeup {args:?} failed: {}",
        describe(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A file of the bundle (`bin/kubectl`, `images/…`); fails when absent.
pub fn bundle_file(rel: &str) -> String {
    let dir = kubeup_provision::artifacts::default_bundle_dir(
        kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION,
    );
    let path = format!("{}/{rel}", dir.display());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: run `cargo xtask bundle && cargo xtask image`"
    );
    path
}

pub fn bundle_bin(name: &str) -> String {
    bundle_file(&format!("bin/{name}"))
}

/// Poll `check` until it returns a value; fail after `timeout_s` seconds.
pub fn wait_for<T>(what: &str, timeout_s: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            started.elapsed().as_secs() < timeout_s,
            "timed out after {timeout_s}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `sandbox down` when dropped, so a failing step leaves nothing behind.
pub struct SandboxGuard(pub PathBuf);

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let o = kubeup(&["sandbox", "down", "--dir", self.0.to_str().unwrap()]);
        if o.status.success() {
            // The cluster directory goes too; kept when the hosts are not
            // gone, for whoever cleans up by hand.
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("cleanup: sandbox down failed: {}", describe(&o));
        }
    }
}

/// The bundle's kubectl against the cluster whose directory is `dir`
/// (its `admin.kubeconfig`).
pub fn kubectl(dir: &Path, args: &[&str]) -> Output {
    let kubeconfig = dir.join("admin.kubeconfig");
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&bundle_bin("kubectl"), &all)
}

/// [`kubectl`] that must succeed; its stdout.
pub fn kubectl_ok(dir: &Path, args: &[&str]) -> String {
    let o = kubectl(dir, args);
    assert!(
        o.status.success(),
        "kubectl {args:?} failed: {}",
        describe(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A shell script on a sandbox host (as root) over OpenSSH with the
/// sandbox's key and pinned host keys (`dir/sandbox/`); must succeed.
pub fn on_host(dir: &Path, address: &str, script: &str) -> String {
    let key = dir.join("sandbox/id_ed25519");
    let known = dir.join("sandbox/known_hosts");
    let o = run(
        "ssh",
        &[
            "-i",
            key.to_str().unwrap(),
            "-o",
            &format!("UserKnownHostsFile={}", known.display()),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            &format!("root@{address}"),
            script,
        ],
    );
    assert!(
        o.status.success(),
        "on {address}: `{script}` failed: {}",
        describe(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `kubeup sandbox up --hosts N --dir DIR`, waiting (up to 20 min) while
/// another sandbox holds the address range: only one fits on a machine.
pub fn sandbox_up(dir: &str, hosts: u32) {
    sandbox_up_with(dir, hosts, 1)
}

/// [`sandbox_up`] with the first `controllers` hosts as controllers.
pub fn sandbox_up_with(dir: &str, hosts: u32, controllers: u32) {
    sandbox_up_roles(dir, hosts, controllers, 0);
}

/// [`sandbox_up`] with `controllers` controllers and, after them,
/// `etcd_hosts` dedicated etcd hosts.
pub fn sandbox_up_roles(dir: &str, hosts: u32, controllers: u32, etcd_hosts: u32) {
    let started = Instant::now();
    let hosts = hosts.to_string();
    let controllers = controllers.to_string();
    let etcd_hosts = etcd_hosts.to_string();
    loop {
        let o = kubeup(&[
            "sandbox",
            "up",
            "--hosts",
            &hosts,
            "--controllers",
            &controllers,
            "--etcd-hosts",
            &etcd_hosts,
            "--dir",
            dir,
        ]);
        if o.status.success() {
            return;
        }
        let text = describe(&o);
        let held = text.contains("held") || text.contains("in use") || text.contains("exists");
        assert!(
            held && started.elapsed() < Duration::from_secs(1200),
            "sandbox up failed: {text}"
        );
        eprintln!("another sandbox holds the range; waiting");
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// `kubectl` arguments that get the operator's pods.
pub const OPERATOR_PODS: [&str; 6] = [
    "-n",
    "kubeup-system",
    "get",
    "pods",
    "-l",
    "app.kubernetes.io/name=kubeup-operator",
];

/// Wait until the operator's pod runs in the cluster of `dir`.
pub fn wait_for_operator(dir: &Path, timeout_s: u64) {
    wait_for("the operator pod to run", timeout_s, || {
        let o = kubectl(dir, &[&OPERATOR_PODS[..], &["--no-headers"]].concat());
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.contains("Running").then_some(())
    });
}

/// The JSON event lines of `kubeup … -o json` (stdout), in order.
pub fn json_events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Every phase that started on a host ended (done, planned or failed)
/// after it, and the last event ends the run (`summary` or `failed`).
pub fn assert_every_start_ends(events: &[serde_json::Value]) {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    for (i, e) in events.iter().enumerate() {
        if s(e, "event") != "started" {
            continue;
        }
        let ended = events[i + 1..].iter().any(|later| {
            s(later, "host") == s(e, "host")
                && s(later, "phase") == s(e, "phase")
                && ["done", "planned", "failed"].contains(&s(later, "event").as_str())
        });
        assert!(
            ended,
            "{} started and never ended: {events:#?}",
            s(e, "phase")
        );
    }
    let last = events.last().expect("no events");
    assert!(
        ["summary", "failed"].contains(&s(last, "event").as_str()) && last["phase"].is_null(),
        "the stream does not end with the run's end: {last}"
    );
}

/// The phase names of events of one kind, in order.
pub fn phases_with(events: &[serde_json::Value], event: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == event)
        .filter_map(|e| e["phase"].as_str().map(str::to_string))
        .collect()
}
