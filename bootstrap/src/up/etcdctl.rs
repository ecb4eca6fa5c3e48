//! etcdctl on a controller, as `up` runs it to add, promote, count and
//! remove etcd members: the bundle's binary with the controller's etcd
//! client certificate (issued by the etcd CA; etcd's peers and clients are
//! all mTLS), and the JSON it prints.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kubeup_provision::hostplan::layout;
use kubeup_provision::ssh::{Command, Session};
use serde::Deserialize;

/// How long a learner may take to catch up before `up` gives up.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(120);

/// The member on the host etcdctl runs on, as its endpoint.
pub const LOCAL: &str = "https://127.0.0.1:2379";

/// The peer URL of the member at `address`.
pub fn peer_url(address: &str) -> String {
    format!("https://{address}:2380")
}

/// The client URL of the member at `address`.
pub fn client_url(address: &str) -> String {
    format!("https://{address}:2379")
}

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

/// etcd's members, asked through `endpoints` on this host.
pub async fn member_list(session: &Session, version: &str, endpoints: &str) -> Result<Vec<Member>> {
    let out = session
        .output(&command(
            version,
            endpoints,
            &["member", "list", "-w", "json"],
        ))
        .await?;
    if out.exit_status != Some(0) {
        bail!(
            "etcdctl member list failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let list: MemberList =
        serde_json::from_slice(&out.stdout).context("etcdctl member list printed no JSON")?;
    Ok(list.members)
}

/// Add member `name` at `peer_url` as a learner of the etcd `endpoints`
/// reach, before its etcd first starts. Already added under that name (an
/// earlier run stopped before its start): nothing to do. Refused when the
/// URL is another member's, or while another learner has not caught up
/// (members join one at a time).
pub async fn add_learner(
    session: &Session,
    version: &str,
    endpoints: &str,
    name: &str,
    peer_url: &str,
) -> Result<String> {
    let existing = member_list(session, version, endpoints).await?;
    if let Some(m) = existing
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
    {
        if m.name == name || m.name.is_empty() {
            return Ok(format!("already a member ({:x})", m.id));
        }
        bail!(
            "{peer_url} is already the etcd member {:?} ({:x}), not {name:?}: remove that member first (`etcdctl member remove {:x}`) or give this host its name",
            m.name,
            m.id,
            m.id
        );
    }
    if let Some(l) = existing.iter().find(|m| m.is_learner) {
        bail!(
            "etcd member {:?} is still a learner: members join one at a time; run `kubeup up` again once it is promoted",
            l.name
        );
    }
    let peer = format!("--peer-urls={peer_url}");
    let add = command(
        version,
        endpoints,
        &["member", "add", name, &peer, "--learner"],
    );
    reconfigure(session, &add, "member add").await?;
    Ok(format!("learner {name}"))
}

/// Promote the learner at `peer_url` once it has caught up with the leader
/// (etcd refuses before that: tried again for [`PROMOTE_TIMEOUT`]).
pub async fn promote_when_caught_up(
    session: &Session,
    version: &str,
    endpoints: &str,
    peer_url: &str,
) -> Result<String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < PROMOTE_TIMEOUT {
        let me = member_list(session, version, endpoints)
            .await?
            .into_iter()
            .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
            .with_context(|| format!("{peer_url} is no etcd member: was it removed?"))?;
        if !me.is_learner {
            return Ok(format!(
                "voting member after {:.1}s",
                started.elapsed().as_secs_f64()
            ));
        }
        let id = format!("{:x}", me.id);
        let out = session
            .output(&command(version, endpoints, &["member", "promote", &id]))
            .await?;
        if out.exit_status == Some(0) {
            continue;
        }
        // "can only promote a learner member which is in sync with
        // leader": not caught up yet.
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!(
        "the learner at {peer_url} did not catch up within {PROMOTE_TIMEOUT:?} (last: {last}); `kubeup status` shows its raft index"
    )
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
