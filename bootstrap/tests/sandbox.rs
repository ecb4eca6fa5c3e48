//! End to end: `kubeup sandbox` with real hosts (systemd-nspawn, netns,
//! sshd). One sandbox for the whole file; a guard runs `sandbox down` even
//! when a step fails or panics.
//!
//! Needs root, Linux, `systemd-container`, `debootstrap`, `openssh-client`
//! (see hack/apt/sandbox.txt), and for the container step the bundle from
//! `cargo xtask bundle`. Anything missing fails the test with the reason.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KUBEUP: &str = env!("CARGO_BIN_EXE_kubeup");
const BUNDLE_VERSION: &str = "v1.34.10";
const SYSCTLS: &[&str] = &[
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
];

fn kubeup(args: &[&str]) -> Output {
    Command::new(KUBEUP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the kubeup binary")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = kubeup(args);
    assert!(o.status.success(), "kubeup {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `sandbox down` when dropped, so a failing step leaves nothing behind.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let dir = self.0.to_string_lossy().into_owned();
        let o = kubeup(&["sandbox", "down", "--dir", &dir]);
        if !o.status.success() {
            eprintln!("cleanup: sandbox down failed: {}", text(&o));
        }
    }
}

#[derive(Debug, Clone)]
struct HostInfo {
    name: String,
    address: String,
    state: String,
    host_key: String,
}

struct Sandbox {
    dir: PathBuf,
    id: String,
    key: PathBuf,
    known_hosts: PathBuf,
    hosts: Vec<HostInfo>,
}

fn status(dir: &Path) -> Sandbox {
    let out = ok(&[
        "sandbox",
        "status",
        "--json",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    Sandbox {
        dir: dir.to_path_buf(),
        id: s(&v["id"]),
        key: PathBuf::from(s(&v["privateKeyFile"])),
        known_hosts: PathBuf::from(s(&v["knownHosts"])),
        hosts: v["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|h| HostInfo {
                name: s(&h["name"]),
                address: s(&h["address"]),
                state: s(&h["state"]),
                host_key: s(&h["hostKey"]),
            })
            .collect(),
    }
}

/// OpenSSH with the sandbox key and strict checking against `known_hosts`.
fn ssh(sb: &Sandbox, known_hosts: &Path, user: &str, addr: &str, cmd: &str) -> Output {
    Command::new("ssh")
        .arg("-i")
        .arg(&sb.key)
        .args(["-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=4",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg(format!("{user}@{addr}"))
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh (install openssh-client)")
}

fn ssh_ok(sb: &Sandbox, user: &str, addr: &str, cmd: &str) -> String {
    let o = ssh(sb, &sb.known_hosts, user, addr, cmd);
    assert!(
        o.status.success(),
        "ssh {user}@{addr} {cmd:?} failed: {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn sysctls() -> BTreeMap<String, String> {
    SYSCTLS
        .iter()
        .map(|n| {
            let p = Path::new("/proc/sys").join(n.replace('.', "/"));
            let v = std::fs::read_to_string(&p).unwrap_or_default();
            ((*n).to_owned(), v.trim().to_owned())
        })
        .collect()
}

fn require_environment() {
    assert!(
        nix_is_root(),
        "the sandbox tests need root (namespaces, bridges, cgroups): run them as root"
    );
    for (tool, pkg) in [
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("ssh", "openssh-client"),
        ("ip", "iproute2"),
    ] {
        assert!(
            which::which(tool).is_ok(),
            "`{tool}` is missing: apt-get install {pkg} (see hack/apt/sandbox.txt)"
        );
    }
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The bundle `cargo xtask bundle` builds (its directory is keyed by
/// hack/bundle/parts as well as the version).
fn bundle_dir() -> PathBuf {
    kubeup_provision::artifacts::default_bundle_dir(BUNDLE_VERSION)
}

/// Copies a local file to the host over ssh (`cat >`).
fn push(sb: &Sandbox, addr: &str, local: &Path, remote: &str, mode: &str) {
    let file =
        std::fs::File::open(local).unwrap_or_else(|e| panic!("open {}: {e}", local.display()));
    let o = Command::new("ssh")
        .arg("-i")
        .arg(&sb.key)
        .args(["-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", sb.known_hosts.display()))
        .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
        .arg(format!("root@{addr}"))
        .arg(format!(
            "mkdir -p \"$(dirname {remote})\" && cat > {remote}.part && chmod {mode} {remote}.part && mv {remote}.part {remote}"
        ))
        .stdin(file)
        .output()
        .expect("run ssh");
    assert!(
        o.status.success(),
        "copy {} to {addr}:{remote}: {}",
        local.display(),
        text(&o)
    );
}

#[test]
fn sandbox_end_to_end() {
    require_environment();
    let tmp = tempfile::Builder::new()
        .prefix("kubeup-sandbox-test-")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path().to_path_buf();
    let d = dir.to_str().unwrap().to_owned();
    let before = sysctls();

    let guard = Down(dir.clone());
    up_waiting_for_the_range(&d);
    let sb = status(&dir);
    assert_eq!(sb.hosts.len(), 2);
    assert_eq!(sb.hosts[0].address, "198.18.0.11");
    assert_eq!(sb.hosts[1].address, "198.18.0.12");
    assert!(
        sb.hosts.iter().all(|h| h.state == "running"),
        "{:?}",
        sb.hosts
    );

    // DIR holds what `kubeup init` writes, with host 1 as a pinned controller.
    let cluster = std::fs::read_to_string(dir.join("cluster.yaml")).expect("cluster.yaml");
    assert!(cluster.contains("198.18.0.11"), "{cluster}");
    assert!(cluster.contains("policy: Pin"), "{cluster}");
    let key1 = sb.hosts[0]
        .host_key
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(cluster.contains(&key1), "cluster.yaml pins host 1's key");
    assert!(dir.join("pki/ca.crt").exists());
    let worker = std::fs::read_to_string(dir.join(format!("workers/{}.yaml", sb.hosts[1].name)))
        .expect("worker manifest");
    assert!(worker.contains("kind: WorkerJoin") && worker.contains("kubernetes.io/ssh-auth"));
    assert!(worker.contains("198.18.0.12") && worker.contains("namespace: kubeup-system"));

    // Each host: its own hostname, root and kube (sudo -n) by the pinned key,
    // no default route, and the other host reachable over the bridge.
    for (i, h) in sb.hosts.iter().enumerate() {
        assert_eq!(ssh_ok(&sb, "root", &h.address, "hostname"), h.name);
        assert_eq!(
            ssh_ok(&sb, "kube", &h.address, "sudo -n id -u && id -un"),
            "0\nkube"
        );
        let routes = ssh_ok(&sb, "root", &h.address, "ip route");
        assert!(!routes.contains("default"), "{}: {routes}", h.name);
        let other = &sb.hosts[1 - i];
        ssh_ok(
            &sb,
            "root",
            &h.address,
            &format!("ping -c1 -W2 {}", other.address),
        );
        assert_eq!(
            ssh_ok(
                &sb,
                "root",
                &h.address,
                "systemctl is-system-running --wait || true"
            ),
            "running"
        );
    }

    // kubeup's own transport reaches the controller through cluster.yaml
    // (pinned host key, the sandbox key).
    let cluster_file = dir.join("cluster.yaml");
    let cf = cluster_file.to_str().unwrap();
    let h1 = sb.hosts[0].clone();
    assert_eq!(
        ok(&["ssh", "-f", cf, &h1.name, "--", "hostname"]).trim(),
        h1.name
    );

    // A wrong pin is refused: host 2's key claimed for host 1's address.
    let wrong = dir.join("wrong_known_hosts");
    std::fs::write(
        &wrong,
        format!("{} {}\n", sb.hosts[0].address, sb.hosts[1].host_key),
    )
    .unwrap();
    let o = ssh(&sb, &wrong, "root", &sb.hosts[0].address, "true");
    assert!(!o.status.success(), "a wrong host key must be refused");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Host key verification failed") || err.contains("IDENTIFICATION HAS CHANGED"),
        "{err}"
    );

    // A second sandbox elsewhere is refused, naming the DIR holding the range.
    let other = tempfile::Builder::new()
        .prefix("kubeup-sandbox-test-other-")
        .tempdir()
        .unwrap();
    let o = kubeup(&[
        "sandbox",
        "up",
        "--hosts",
        "1",
        "--dir",
        other.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "second sandbox must be refused");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&d) && err.contains("198.18.0.0/24"), "{err}");

    // cut: SSH times out; heal: back.
    let h2 = sb.hosts[1].clone();
    ok(&["sandbox", "cut", &h2.name, "--dir", &d]);
    assert_eq!(status(&dir).hosts[1].state, "link cut");
    let t = Instant::now();
    let o = ssh(&sb, &sb.known_hosts, "root", &h2.address, "true");
    assert!(!o.status.success(), "ssh to a cut host must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("timed out"), "expected a timeout: {err}");
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "failed too fast for a timeout: {err}"
    );
    ok(&["sandbox", "heal", "2", "--dir", &d]);
    assert_eq!(ssh_ok(&sb, "root", &h2.address, "hostname"), h2.name);
    // The same through `kubeup ssh`: a timeout error naming the host.
    ok(&["sandbox", "cut", "1", "--dir", &d]);
    let o = kubeup(&["ssh", "-f", cf, &h1.name, "--", "true"]);
    ok(&["sandbox", "heal", "1", "--dir", &d]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "kubeup ssh to a cut host must fail");
    assert!(
        err.contains("timed out") && err.contains(&h1.address),
        "expected a timeout naming {}: {err}",
        h1.address
    );
    assert_eq!(
        ok(&["ssh", "-f", cf, &h1.name, "--", "hostname"]).trim(),
        h1.name
    );

    // stop/start keeps files written before.
    ssh_ok(&sb, "root", &h2.address, "echo kept > /root/marker && sync");
    ok(&["sandbox", "stop", "2", "--dir", &d]);
    assert_eq!(status(&dir).hosts[1].state, "stopped");
    assert!(
        !ssh(&sb, &sb.known_hosts, "root", &h2.address, "true")
            .status
            .success()
    );
    ok(&["sandbox", "start", "2", "--dir", &d]);
    assert_eq!(ssh_ok(&sb, "root", &h2.address, "cat /root/marker"), "kept");

    // A kubelet inside a host changes the real kernel's sysctls (its
    // /proc/sys is writable); `down` must put them back.
    let flipped = if before["vm.overcommit_memory"] == "1" {
        "0"
    } else {
        "1"
    };
    ssh_ok(
        &sb,
        "root",
        &sb.hosts[0].address,
        &format!("echo {flipped} > /proc/sys/vm/overcommit_memory"),
    );
    assert_eq!(sysctls()["vm.overcommit_memory"], flipped);

    // The bundle's containerd runs the pause image inside host 1.
    containerd_runs_pause(&sb, &sb.hosts[0].address.clone());

    // down: everything goes, quickly, and again is a no-op.
    let t = Instant::now();
    ok(&["sandbox", "down", "--dir", &d]);
    let took = t.elapsed();
    eprintln!("sandbox down: {:.1} s", took.as_secs_f64());
    assert!(took <= Duration::from_secs(5), "down took {took:?}");
    ok(&["sandbox", "down", "--dir", &d]);
    std::mem::forget(guard);
    assert_nothing_left(&sb);
    assert_eq!(sysctls(), before, "sysctls restored");
    let o = kubeup(&["sandbox", "status", "--dir", &d]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no sandbox"));
}

/// `sandbox up --hosts 2`; while another sandbox on this machine holds the
/// range (someone else's test), waits for it, up to 10 minutes.
fn up_waiting_for_the_range(d: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut said = false;
    loop {
        let started = Instant::now();
        let o = kubeup(&["sandbox", "up", "--hosts", "2", "--dir", d]);
        if o.status.success() {
            eprintln!(
                "sandbox up --hosts 2: {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        if !err.contains("is held by the sandbox in") || Instant::now() > deadline {
            panic!("kubeup sandbox up failed: {}", text(&o));
        }
        if !said {
            eprintln!("waiting for another sandbox to go: {}", err.trim());
            said = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn containerd_runs_pause(sb: &Sandbox, addr: &str) {
    let bundle = bundle_dir();
    let needed = [
        "bin/containerd",
        "bin/containerd-shim-runc-v2",
        "bin/ctr",
        "bin/runc",
        "images/pause.tar",
    ];
    let missing: Vec<_> = needed.iter().filter(|f| !bundle.join(f).exists()).collect();
    assert!(
        missing.is_empty(),
        "the Kubernetes bundle is incomplete in {} (missing {missing:?}): run `cargo xtask bundle`",
        bundle.display()
    );
    for b in ["containerd", "containerd-shim-runc-v2", "ctr", "runc"] {
        push(
            sb,
            addr,
            &bundle.join("bin").join(b),
            &format!("/opt/kubeup-test/bin/{b}"),
            "0755",
        );
    }
    push(
        sb,
        addr,
        &bundle.join("images/pause.tar"),
        "/opt/kubeup-test/pause.tar",
        "0644",
    );
    let config = "version = 2\n\
        [plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true\n";
    ssh_ok(
        sb,
        "root",
        addr,
        &format!("printf '%s' '{config}' > /opt/kubeup-test/config.toml"),
    );
    ssh_ok(
        sb,
        "root",
        addr,
        "systemd-run --unit=kubeup-test-containerd --setenv=PATH=/opt/kubeup-test/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         /opt/kubeup-test/bin/containerd --config /opt/kubeup-test/config.toml",
    );
    let ctr = "PATH=/opt/kubeup-test/bin:$PATH ctr -n kubeup-test";
    let script = format!(
        "set -e; for i in $(seq 1 100); do {ctr} version >/dev/null 2>&1 && break; sleep 0.1; done; \
         {ctr} images import /opt/kubeup-test/pause.tar >/dev/null; \
         img=$({ctr} images ls -q | head -n1); test -n \"$img\"; \
         {ctr} run -d \"$img\" pause1; \
         for i in $(seq 1 50); do {ctr} task ls | grep -q 'pause1.*RUNNING' && break; sleep 0.1; done; \
         {ctr} task ls"
    );
    let o = ssh(sb, &sb.known_hosts, "root", addr, &script);
    let out = text(&o);
    let journal = ssh(
        sb,
        &sb.known_hosts,
        "root",
        addr,
        "journalctl -u kubeup-test-containerd --no-pager | tail -30",
    );
    assert!(
        o.status.success() && out.contains("RUNNING"),
        "containerd did not run the pause image: {out}\ncontainerd log:\n{}",
        String::from_utf8_lossy(&journal.stdout)
    );
    ssh_ok(
        sb,
        "root",
        addr,
        &format!(
            "{ctr} task kill -s KILL pause1; sleep 0.3; {ctr} task rm -f pause1; {ctr} c rm pause1; systemctl stop kubeup-test-containerd"
        ),
    );
}

fn assert_nothing_left(sb: &Sandbox) {
    let id = &sb.id;
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !netns.contains(&format!("kube-{id}-")),
        "netns left: {netns}"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&format!("kb{id}")) && !links.contains(&format!("kv{id}")),
        "links left: {links}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = sb.dir.to_string_lossy();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(dir.as_ref()) || l.contains(&format!("kube-{id}-"))),
        "mounts left"
    );
    let cg = Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name"])
        .arg(format!("sbx-kube-{id}-*"))
        .output()
        .unwrap();
    let cg = String::from_utf8_lossy(&cg.stdout);
    assert!(cg.trim().is_empty(), "cgroups left: {cg}");
    let machine = format!("--machine=kube-{id}-");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            assert!(
                !cmd.contains(&machine),
                "process left: {} {cmd}",
                e.path().display()
            );
        }
    }
    assert!(!sb.dir.join("sandbox/hosts").exists(), "host dirs left");
    assert!(
        !sb.dir.join("sandbox/state.json").exists(),
        "state file left"
    );
}

/// Missing tools are named with the Debian package to install, before
/// anything is made (no sandbox is created, so this runs beside the test
/// above).
#[test]
fn missing_tools_are_named_with_their_package() {
    require_environment();
    let bin = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let link = |tool: &str| {
        let path = which::which(tool).unwrap_or_else(|_| panic!("{tool} is installed"));
        std::os::unix::fs::symlink(path, bin.path().join(tool)).unwrap();
    };
    let up = |path: &Path| {
        Command::new(KUBEUP)
            .args(["sandbox", "up", "--hosts", "1", "--dir"])
            .arg(dir.path())
            .env("PATH", path)
            .env("KUBEUP_CACHE", cache.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    link("ip");
    link("ssh-keygen");
    let o = up(bin.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("systemd-nspawn") && err.contains("apt-get install systemd-container"),
        "{err}"
    );
    // With nspawn but no cached rootfs and no debootstrap.
    link("systemd-nspawn");
    let o = up(bin.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("apt-get install debootstrap"), "{err}");
    assert!(
        !dir.path().join("sandbox/state.json").exists(),
        "nothing made"
    );
}
