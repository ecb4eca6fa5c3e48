//! Dedicated etcd hosts on the sandbox: one controller, three hosts that
//! run etcd alone, one worker joined by the operator. `up` brings the etcd
//! members up first and points the apiserver at all three; losing one
//! keeps the API writable; `status` shows each member; shrinking to one
//! host and growing back to three by editing cluster.yaml keeps the data;
//! moving etcd to the controllers is refused before anything changes;
//! `reset` clears an etcd host.

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

fn status(file: &str) -> (bool, Value) {
    let o = kubeup(&["status", "-f", file, "-o", "json"]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", describe(&o)));
    (o.status.success(), v)
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m[key].as_str().unwrap().to_string())
        .collect()
}

/// A write through the API (a ConfigMap), retried for up to 15 s.
fn write_works(dir: &Path, name: &str) {
    let started = Instant::now();
    loop {
        let o = kubectl(dir, &["create", "configmap", name, "--from-literal=k=v"]);
        if o.status.success() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no write through the API: {}",
            describe(&o)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `yaml` without each line `starts` picks and the lines under it (those
/// starting with `inner`).
fn without_blocks(yaml: &str, starts: impl Fn(&str) -> bool, inner: &str) -> String {
    let mut out = vec![];
    let mut skipping = false;
    for line in yaml.lines() {
        if starts(line) {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with(inner) {
            continue;
        }
        skipping = false;
        out.push(line);
    }
    out.join("\n") + "\n"
}

#[test]
fn one_controller_on_three_dedicated_etcd_hosts() {
    let dir = std::env::temp_dir().join(format!("kubeup-e2e-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _guard = SandboxGuard(dir.clone());
    let d = dir.to_str().unwrap();
    sandbox_up_roles(d, 5, 1, 3);
    let file = dir.join("cluster.yaml").display().to_string();
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(
        yaml.contains("  etcd:\n    external:\n    - address:"),
        "{yaml}"
    );

    // `plan` names the etcd hosts' phases before anything runs.
    let plan = kubeup(&["plan", "-f", &file]);
    let text = describe(&plan);
    assert!(plan.status.success(), "{text}");
    assert!(text.contains("etcd install"), "{text}");

    let up = kubeup(&["up", "-f", &file]);
    assert!(up.status.success(), "{}", describe(&up));
    let (healthy, s) = status(&file);
    assert!(healthy, "{s:#}");
    let etcd_hosts = s["etcdHosts"].as_array().unwrap().clone();
    assert_eq!(etcd_hosts.len(), 3, "{s:#}");
    assert!(etcd_hosts.iter().all(|h| h["etcdHealthy"] == true), "{s:#}");
    let leaders = etcd_hosts
        .iter()
        .filter(|h| h["etcd"]["isLeader"] == true)
        .count();
    assert_eq!(leaders, 1, "{s:#}");
    // etcd's own member list: the three hosts, all voters.
    let mut members = names(&s["members"], "name");
    members.sort();
    let mut hosts = names(&s["etcdHosts"], "name");
    hosts.sort();
    assert_eq!(members, hosts, "{s:#}");
    assert!(
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["isLearner"] == false)
    );
    let controller = &s["controllers"][0];
    assert_eq!(controller["apiserverReady"], true, "{s:#}");
    let ctl = controller["address"].as_str().unwrap().to_string();

    // The controller runs no etcd and its apiserver dials all three; the
    // etcd hosts run etcd and nothing of Kubernetes, and hold no CA key.
    let unit = on_host(
        &dir,
        &ctl,
        "test ! -e /etc/systemd/system/etcd.service && ! test -d /var/lib/etcd/member && cat /etc/systemd/system/kube-apiserver.service",
    );
    for h in &etcd_hosts {
        let want = format!("https://{}:2379", h["address"].as_str().unwrap());
        assert!(unit.contains(&want), "{want} missing from:\n{unit}");
    }
    let first_etcd = etcd_hosts[0]["address"].as_str().unwrap().to_string();
    on_host(
        &dir,
        &first_etcd,
        "systemctl is-active --quiet etcd && ! systemctl is-active --quiet kubelet && ! systemctl is-active --quiet containerd \
         && test ! -e /opt/kubeup/bundle/*/bin/kubelet && test ! -e /etc/kubernetes/pki/etcd/ca.key && test ! -e /etc/kubernetes/pki/ca.key",
    );

    // The operator joins a worker against this cluster, and a second `up`
    // changes nothing.
    wait_for_operator(&dir, 120);
    let worker = std::fs::read_dir(dir.join("workers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "yaml"))
        .unwrap();
    kubectl_ok(&dir, &["apply", "-f", worker.to_str().unwrap()]);
    kubectl_ok(
        &dir,
        &[
            "-n",
            "kubeup-system",
            "wait",
            "workerjoin",
            "--all",
            "--for=jsonpath={.status.phase}=Ready",
            "--timeout=240s",
        ],
    );
    let again = kubeup_ok(&["up", "-f", &file]);
    assert!(again.contains("no changes"), "{again}");

    // One etcd host down: two of three keep the majority, the API stays
    // writable, status says which member is gone; back, all healthy.
    let lost = etcd_hosts[1]["name"].as_str().unwrap().to_string();
    kubeup_ok(&["sandbox", "stop", &lost, "--dir", d]);
    write_works(&dir, "written-with-one-etcd-host-down");
    let (healthy, s) = status(&file);
    assert!(!healthy, "{s:#}");
    let row = s["etcdHosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == lost.as_str())
        .unwrap()
        .clone();
    assert!(
        row["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{row:#}"
    );
    kubeup_ok(&["sandbox", "start", &lost, "--dir", d]);
    wait_for("etcd healthy again", 120, || {
        let (healthy, s) = status(&file);
        healthy.then_some(s)
    });

    // Shrink to one etcd host by editing cluster.yaml: the other two leave
    // etcd one at a time (each behind the quorum gate) and are reset; the
    // apiserver then names the one left.
    let fewer = dir.join("cluster-fewer-etcd.yaml");
    let third = format!(
        "    - address: {}",
        etcd_hosts[2]["address"].as_str().unwrap()
    );
    let second = format!(
        "    - address: {}",
        etcd_hosts[1]["address"].as_str().unwrap()
    );
    // The second and third entries go (each an address line and the
    // indented lines under it).
    let changed = without_blocks(&yaml, |l| l == second || l == third, "      ");
    std::fs::write(&fewer, changed).unwrap();
    let fewer_file = fewer.to_str().unwrap();
    let plan = kubeup(&["plan", "-f", fewer_file]);
    let text = describe(&plan);
    assert!(plan.status.success(), "{text}");
    assert!(
        text.contains("leave etcd") && text.contains("remove etcd member"),
        "{text}"
    );
    let (_, s) = status(&file);
    assert_eq!(
        s["members"].as_array().unwrap().len(),
        3,
        "plan changed nothing: {s:#}"
    );
    let started = Instant::now();
    let shrink = kubeup(&["up", "-f", fewer_file]);
    assert!(shrink.status.success(), "{}", describe(&shrink));
    eprintln!("etcd hosts 3 -> 1: {:.1}s", started.elapsed().as_secs_f64());
    let (healthy, s) = status(fewer_file);
    assert!(healthy, "{s:#}");
    assert_eq!(
        names(&s["members"], "name"),
        [etcd_hosts[0]["name"].as_str().unwrap()]
    );
    write_works(&dir, "written-with-one-etcd-host");
    let unit = on_host(&dir, &ctl, "cat /etc/systemd/system/kube-apiserver.service");
    for (i, h) in etcd_hosts.iter().enumerate() {
        let url = format!("https://{}:2379", h["address"].as_str().unwrap());
        assert_eq!(unit.contains(&url), i == 0, "{url} in:\n{unit}");
    }
    for h in &etcd_hosts[1..] {
        on_host(
            &dir,
            h["address"].as_str().unwrap(),
            "! systemctl is-active --quiet etcd && test ! -e /var/lib/etcd/member",
        );
    }

    // Grow back to three: each new host joins as a learner and is promoted
    // before the next; the data written meanwhile is there.
    let plan = kubeup(&["plan", "-f", &file]);
    let text = describe(&plan);
    assert!(plan.status.success(), "{text}");
    assert!(text.contains("as a learner"), "{text}");
    let started = Instant::now();
    let grow = kubeup(&["up", "-f", &file, "-o", "json"]);
    assert!(grow.status.success(), "{}", describe(&grow));
    eprintln!("etcd hosts 1 -> 3: {:.1}s", started.elapsed().as_secs_f64());
    let events = json_events(&grow.stdout);
    let done = |phase: &str| {
        events
            .iter()
            .filter(|e| e["event"] == "done" && e["phase"] == phase)
            .count()
    };
    assert_eq!((done("etcd join"), done("etcd promote")), (2, 2));
    let s = wait_for("three healthy etcd members again", 60, || {
        let (healthy, s) = status(&file);
        healthy.then_some(s)
    });
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{s:#}");
    assert!(members.iter().all(|m| m["isLearner"] == false), "{s:#}");
    kubectl_ok(&dir, &["get", "configmap", "written-with-one-etcd-host"]);
    let again = kubeup_ok(&["up", "-f", &file]);
    assert!(again.contains("no changes"), "{again}");

    // Moving etcd to the controllers is refused before anything changes.
    let stacked = dir.join("cluster-stacked.yaml");
    let without_etcd = without_blocks(&yaml, |l| l == "  etcd:", "    ");
    std::fs::write(&stacked, without_etcd).unwrap();
    let refused = kubeup(&["up", "-f", stacked.to_str().unwrap()]);
    let text = describe(&refused);
    assert!(!refused.status.success(), "{text}");
    assert!(
        text.contains("moving etcd between the controllers and dedicated hosts is not supported")
            && text.contains("nothing was changed"),
        "{text}"
    );
    let (healthy, s) = status(&file);
    assert!(healthy, "{s:#}");
    assert_eq!(s["members"].as_array().unwrap().len(), 3, "{s:#}");

    // `reset` of an etcd host clears it like any other host.
    let last = etcd_hosts[2]["name"].as_str().unwrap().to_string();
    let last_address = etcd_hosts[2]["address"].as_str().unwrap().to_string();
    kubeup_ok(&["reset", "-f", &file, "--yes", &last]);
    on_host(
        &dir,
        &last_address,
        "! systemctl is-active --quiet etcd && test ! -e /var/lib/etcd && test ! -e /etc/systemd/system/etcd.service",
    );
}
