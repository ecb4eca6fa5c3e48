//! etcdctl on a controller, as `up` runs it to add, promote, count and
//! remove etcd members: the bundle's binary with the controller's etcd
//! client certificate (issued by the etcd CA; etcd's peers and clients are
//! all mTLS), and the JSON it prints.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kubeup_provision::hostplan::layout;
use kubeup_provision::ssh::{Command, Session};
use serde::Deserialize;

/// The endpoints and the controller's etcd client credentials, as flags.
pub fn connection_flags(endpoints: &str) -> [String; 4] {
    let p = layout::ETCD_PKI;
    [
        format!("--endpoints={endpoints}"),
        format!("--cacert={p}/ca.crt"),
        format!("--cert={p}/healthcheck-client.crt"),
        format!("--key={p}/healthcheck-client.key"),
    ]
}

/// `etcdctl --endpoints=… ARGS` for Kubernetes `version`'s bundle.
pub fn command(version: &str, endpoints: &str, args: &[&str]) -> Command {
    Command::new(layout::bin(version, "etcdctl"))
        .args(connection_flags(endpoints))
        .arg("--command-timeout=5s")
        .args(args)
        .privileged()
        .timeout(Duration::from_secs(20))
}

/// Run a membership change (`member add|promote|remove`). etcd refuses one
/// with "unhealthy cluster" while a member has been back for less than its
/// health interval (5 s), e.g. a controller just started again: such a
/// refusal is tried again for up to a minute; any other error ends it, with
/// etcdctl's last line.
pub async fn reconfigure(session: &Session, cmd: &Command, what: &str) -> Result<String> {
    let started = Instant::now();
    loop {
        let out = session.output(cmd).await?;
        if out.exit_status == Some(0) {
            return Ok(out.stdout_str());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("unhealthy cluster") && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let last = stderr.trim().lines().last().unwrap_or("").to_string();
        bail!("etcdctl {what} failed: {last}");
    }
}

/// `member list -w json`.
#[derive(Debug, Deserialize)]
pub struct MemberList {
    #[serde(default)]
    pub members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
pub struct Member {
    #[serde(rename = "ID")]
    pub id: u64,
    /// Empty for a member added but not started yet.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

/// One entry of `endpoint health -w json`.
#[derive(Debug, Deserialize)]
pub struct Health {
    pub endpoint: String,
    pub health: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_list_parses_with_learners_and_unstarted_members() {
        let json = r#"{"header":{},"members":[{"ID":1,"name":"a","peerURLs":["https://10.0.0.1:2380"],"clientURLs":["https://10.0.0.1:2379"]},{"ID":2,"peerURLs":["https://10.0.0.2:2380"],"isLearner":true}]}"#;
        let list: MemberList = serde_json::from_str(json).unwrap();
        assert_eq!(list.members.len(), 2);
        assert!(!list.members[0].is_learner && list.members[1].is_learner);
        assert!(list.members[1].name.is_empty() && list.members[1].client_urls.is_empty());
        let health: Vec<Health> = serde_json::from_str(
            r#"[{"endpoint":"https://10.0.0.1:2379","health":false,"error":"x"}]"#,
        )
        .unwrap();
        assert!(!health[0].health);
    }
}
