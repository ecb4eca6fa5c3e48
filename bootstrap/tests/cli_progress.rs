//! `kubeup up`, `plan` and `reset` as a user runs them (the built binary)
//! against hosts that cannot become a controller: a closed port, and a real
//! OpenSSH sshd whose user may not use sudo. The JSON progress stream ends
//! on every path (each started phase has its end, the last event ends the
//! run) and the error names the phase, the host and what to do next.

// An integration test, not product code: a panic here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

mod common;

use std::path::Path;

use common::{assert_every_start_ends, describe, json_events, kubeup, phases_with};
use kubeup_testsupport::sshd::{Sshd, ensure_user, keygen};

/// A cluster directory whose controller is `user@127.0.0.1:port`.
fn cluster(dir: &Path, port: u16, user: &str, key: &Path, host_key: Option<&str>) -> String {
    let dir_s = dir.to_str().unwrap();
    let port = port.to_string();
    let mut args = vec![
        "init",
        dir_s,
        "--controller",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        user,
        "--private-key-file",
        key.to_str().unwrap(),
    ];
    if let Some(k) = host_key {
        args.extend(["--host-key", k]);
    }
    let o = kubeup(&args);
    assert!(o.status.success(), "{}", describe(&o));
    dir.join("cluster.yaml").to_str().unwrap().to_string()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_refused_connection_ends_the_stream_with_connect_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "id", "ed25519", "").unwrap();
    let file = cluster(
        &tmp.path().join("c"),
        closed_port(),
        "root",
        &key.private,
        None,
    );
    for command in ["up", "plan"] {
        let o = kubeup(&[command, "-f", &file, "-o", "json"]);
        assert!(!o.status.success(), "{}", describe(&o));
        let events = json_events(&o.stdout);
        assert_every_start_ends(&events);
        assert_eq!(phases_with(&events, "started"), ["connect"], "{events:#?}");
        assert_eq!(phases_with(&events, "failed"), ["connect"], "{events:#?}");
        let last = events.last().unwrap();
        assert_eq!(
            (last["failedPhase"].as_str(), last["command"].as_str()),
            (Some("connect"), Some(command)),
            "{last}"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("connect failed on 127.0.0.1") && err.contains("kubeup ssh -f"),
            "the error names neither phase and host nor the next step: {err}"
        );
    }
    // reset (text only) fails the same way, naming the phase.
    let o = kubeup(&["reset", "-f", &file, "--yes"]);
    let err = describe(&o);
    assert!(
        !o.status.success() && err.contains("connect failed on 127.0.0.1"),
        "{err}"
    );
}

/// A user sshd lets in but sudo does not: preflight cannot look as root.
#[test]
fn a_failing_preflight_ends_every_started_phase() {
    const USER: &str = "kubeup-nosudo";
    ensure_user(USER, None, None).unwrap();
    let sshd = Sshd::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "id", "ed25519", "").unwrap();
    sshd.authorize(USER, &key.public).unwrap();
    let file = cluster(
        &tmp.path().join("c"),
        sshd.port(),
        USER,
        &key.private,
        Some(&sshd.host_key("ed25519")),
    );
    for command in ["up", "plan"] {
        let o = kubeup(&[command, "-f", &file, "-o", "json"]);
        assert!(!o.status.success(), "{}", describe(&o));
        let events = json_events(&o.stdout);
        assert_every_start_ends(&events);
        assert_eq!(phases_with(&events, "done"), ["connect"], "{events:#?}");
        assert_eq!(phases_with(&events, "failed"), ["preflight"], "{events:#?}");
        let failed = events
            .iter()
            .find(|e| e["event"] == "failed" && e["phase"] == "preflight")
            .unwrap();
        assert_eq!(failed["host"], "127.0.0.1", "{failed}");
        assert_eq!(events.last().unwrap()["failedPhase"], "preflight");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("preflight failed on 127.0.0.1")
                && err.contains(&format!("kubeup {command} -f")),
            "{err}"
        );
    }
}
