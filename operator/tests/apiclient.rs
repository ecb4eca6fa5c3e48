//! The operator's API client against a real kube-apiserver whose
//! connection goes dead (its packets dropped, as when the controller behind
//! the `kubernetes` Service is stopped): a request on it fails within the
//! TCP user timeout, where kube's default client is still waiting; the
//! next request gets a new connection and an answer.
//!
//! Needs root and iptables (a DROP rule on one loopback port, removed on
//! every exit).

// Test code: a panic here is a test failure, not a crash of the product.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::panic
)]

use std::process::Command;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kubeup_operator::apiclient;
use kubeup_testsupport::apiserver::ApiServer;
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection to `target`: the port the DROP rule names,
/// so the apiserver's own port (and the harness's client) stay untouched.
async fn forwarder(target: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

/// Packets to `port` on loopback are dropped while this lives.
struct Blackhole(u16);

impl Blackhole {
    fn args(&self, op: &str) -> Vec<String> {
        let port = self.0.to_string();
        [
            "-w", op, "INPUT", "-i", "lo", "-p", "tcp", "--dport", &port, "-j", "DROP",
        ]
        .map(str::to_string)
        .to_vec()
    }

    fn start(port: u16) -> Self {
        let me = Self(port);
        let status = Command::new("iptables").args(me.args("-I")).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "iptables -I failed (this test needs root and iptables)"
        );
        me
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("iptables").args(self.args("-D")).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_connection_fails_in_seconds_and_the_next_request_is_answered() {
    let api = ApiServer::start().await.expect("apiserver harness");
    let target: u16 = api.url.rsplit(':').next().unwrap().parse().unwrap();
    let port = forwarder(target).await;
    let kubeconfig = Kubeconfig::read_from(&api.kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    config.cluster_url = format!("https://127.0.0.1:{port}").parse().unwrap();
    let ours = apiclient::build(config.clone()).unwrap();
    let kubes = kube::Client::try_from(config).unwrap();
    // Each holds a pooled connection through the forwarder.
    ours.apiserver_version().await.unwrap();
    kubes.apiserver_version().await.unwrap();

    let dead = Blackhole::start(port);
    let started = Instant::now();
    let default_client = tokio::spawn(async move { kubes.apiserver_version().await });
    let err = tokio::time::timeout(Duration::from_secs(60), ours.apiserver_version())
        .await
        .expect("the operator's client gave up within 60 s")
        .expect_err("no answer can come through the dropped packets");
    let failed_after = started.elapsed();
    println!("operator client: failed after {failed_after:?}: {err}");
    assert!(
        failed_after >= apiclient::USER_TIMEOUT / 2
            && failed_after < apiclient::USER_TIMEOUT + Duration::from_secs(10),
        "failed after {failed_after:?}, the user timeout is {:?}",
        apiclient::USER_TIMEOUT
    );
    assert!(
        !default_client.is_finished(),
        "kube's default client is still waiting on its dead connection: what this fixes"
    );
    default_client.abort();

    drop(dead);
    let version = tokio::time::timeout(Duration::from_secs(20), ours.apiserver_version())
        .await
        .expect("answered in time")
        .expect("a new connection is answered");
    assert_eq!(version.major, "1");
}
