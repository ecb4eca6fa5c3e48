//! `kubeup status -f cluster.yaml`: each controller's apiserver and etcd
//! health (etcd's on the dedicated etcd hosts when it runs there), the etcd
//! members (leader, learners, how far each lags behind
//! the leader's raft index), who holds the endpoint, and when each
//! apiserver's certificate expires. Read-only; every controller is asked
//! over SSH at once, so one that is down shows as such instead of hiding
//! the others. Exit status 1 when anything is unhealthy.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use kubeup_crds::cluster::{ControllerHost, EndpointKind};
use kubeup_provision::config::{self, LoadedCluster};
use kubeup_provision::hostplan::layout;
use kubeup_provision::ssh::{Command, SshOptions};
use serde::Serialize;

use crate::{ClusterFile, Output, cmd_ssh};

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub file: ClusterFile,
    /// text (a table) or json.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: Output,
}

/// What one machine said about itself.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    pub name: String,
    pub address: String,
    /// `controller`, or `etcd` for a dedicated etcd host.
    pub role: &'static str,
    /// Empty when reachable; otherwise why not.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The local apiserver's `/readyz` answered `ok`.
    pub apiserver_ready: bool,
    /// The local etcd answered its status.
    pub etcd_healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdMember>,
    /// Holds the virtual IP (with a `VirtualIP` endpoint).
    pub holds_endpoint: bool,
    /// The apiserver certificate's notAfter (RFC 3339) and days left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_cert_expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_cert_days_left: Option<i64>,
}

/// One etcd member as its own endpoint reports it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMember {
    pub member_id: String,
    pub is_leader: bool,
    pub is_learner: bool,
    pub raft_index: u64,
    /// Entries behind the highest raft index any member reported.
    pub lag: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    pub controllers: Vec<ControllerStatus>,
    /// The dedicated etcd hosts (none when etcd runs on the controllers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub etcd_hosts: Vec<ControllerStatus>,
    /// The etcd members by name (from the first controller that answered).
    pub members: Vec<MemberEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub healthy: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberEntry {
    pub name: String,
    pub member_id: String,
    pub is_learner: bool,
}

pub async fn run(args: StatusArgs) -> Result<ExitCode> {
    let loaded = config::load(&args.file.file)?;
    let health = gather(&loaded).await;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&health)?),
        Output::Text => print!("{}", table(&health)),
    }
    Ok(if health.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Ask every controller at once, then relate the answers (leader, lag).
pub async fn gather(loaded: &LoadedCluster) -> ClusterHealth {
    let spec = &loaded.cluster.spec;
    let vip = spec
        .control_plane_endpoint
        .as_ref()
        .filter(|e| e.kind == EndpointKind::VirtualIP)
        .map(|e| e.address.clone());
    let hosts: Vec<(&ControllerHost, &'static str)> = spec
        .controllers
        .iter()
        .map(|c| (c, "controller"))
        .chain(spec.etcd.external.iter().map(|c| (c, "etcd")))
        .collect();
    let answers = futures::future::join_all(hosts.iter().map(|(c, _)| {
        let vip = vip.clone();
        async move { ask(loaded, c, vip.as_deref()).await }
    }))
    .await;
    let mut controllers = vec![];
    let mut members = vec![];
    for ((c, role), answer) in hosts.iter().zip(answers) {
        let mut status = ControllerStatus {
            name: c.name.clone().unwrap_or_else(|| c.address.clone()),
            address: c.address.clone(),
            role,
            ..ControllerStatus::default()
        };
        match answer {
            Ok(a) => {
                status.apiserver_ready = a.readyz.trim() == "ok";
                status.holds_endpoint = a.holds_vip;
                if let Some(pem) = a.apiserver_cert.filter(|p| !p.is_empty())
                    && let Ok((not_after, text)) = kubeup_provision::pki::not_after_unix(&pem)
                {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    status.apiserver_cert_expires = Some(text);
                    status.apiserver_cert_days_left = Some((not_after - now) / 86_400);
                }
                if let Some(e) = parse_endpoint_status(&a.etcd_status) {
                    status.etcd_healthy = true;
                    status.etcd = Some(e);
                }
                if members.is_empty() {
                    members = parse_member_list(&a.etcd_members);
                }
            }
            Err(e) => status.error = format!("{e:#}"),
        }
        controllers.push(status);
    }
    // Learners and lag: relative to what the members said.
    let top = controllers
        .iter()
        .filter_map(|c| c.etcd.as_ref().map(|e| e.raft_index))
        .max()
        .unwrap_or(0);
    for c in &mut controllers {
        if let Some(e) = &mut c.etcd {
            e.lag = top.saturating_sub(e.raft_index);
            e.is_learner = members
                .iter()
                .any(|m| m.member_id == e.member_id && m.is_learner);
        }
    }
    let leaders = controllers
        .iter()
        .filter(|c| c.etcd.as_ref().is_some_and(|e| e.is_leader))
        .count();
    let holders = controllers.iter().filter(|c| c.holds_endpoint).count();
    // Each machine is healthy in what it runs: an apiserver on every
    // controller, an etcd member wherever etcd runs.
    let stacked = spec.etcd.is_stacked();
    let healthy = controllers.iter().all(|c| {
        let runs_apiserver = c.role == "controller";
        let runs_etcd = !runs_apiserver || stacked;
        c.error.is_empty()
            && (!runs_apiserver || c.apiserver_ready)
            && (!runs_etcd || c.etcd_healthy)
    }) && leaders == 1
        && (vip.is_none() || holders == 1);
    let (controllers, etcd_hosts) = controllers
        .into_iter()
        .partition(|c| c.role == "controller");
    ClusterHealth {
        controllers,
        etcd_hosts,
        members,
        endpoint: spec
            .control_plane_endpoint
            .as_ref()
            .map(|e| format!("{}:{}", e.address, e.port)),
        healthy,
    }
}

/// Starts each section of the script's output.
const MARK: &str = "==kubeup-status:";

struct Answer {
    readyz: String,
    etcd_status: String,
    etcd_members: String,
    holds_vip: bool,
    apiserver_cert: Option<String>,
}

/// One SSH command per controller: every answer in one script, each
/// section read on its own so one that fails leaves the others.
async fn ask(loaded: &LoadedCluster, c: &ControllerHost, vip: Option<&str>) -> Result<Answer> {
    let options = SshOptions {
        connect_timeout: Duration::from_secs(5),
        ..SshOptions::default()
    };
    let session = cmd_ssh::connect(loaded, c, None, &options, |label| {
        format!("unreachable over SSH ({label})")
    })
    .await?;
    let bin = format!(
        "{}/bin",
        layout::bundle_dir(&loaded.cluster.spec.kubernetes_version)
    );
    let etcd = format!(
        "{bin}/etcdctl --command-timeout=2s {}",
        crate::up::etcdctl::connection_flags("https://127.0.0.1:2379").join(" ")
    );
    let vip_check = vip
        .map(|v| format!("ip -4 -o addr show to {v}/32 | grep -q . && echo yes || echo no"))
        .unwrap_or_else(|| "echo no".into());
    let script = format!(
        "echo '{MARK}readyz'; {bin}/kubectl --kubeconfig={k8s}/scheduler.kubeconfig --request-timeout=2s get --raw=/readyz 2>/dev/null\n\
         echo; echo '{MARK}etcd-status'; {etcd} endpoint status -w json 2>/dev/null\n\
         echo; echo '{MARK}etcd-members'; {etcd} member list -w json 2>/dev/null\n\
         echo; echo '{MARK}vip'; {vip_check}\n\
         echo '{MARK}cert'; cat {pki}/apiserver.crt 2>/dev/null\n",
        pki = layout::PKI,
        k8s = layout::K8S,
    );
    let out = session
        .output(
            &Command::shell(script)
                .privileged()
                .timeout(Duration::from_secs(15)),
        )
        .await;
    session.close().await;
    let text = out?.stdout_str();
    let section = |name: &str| -> String {
        let start = format!("{MARK}{name}\n");
        text.split_once(&start)
            .map(|(_, rest)| rest.split(MARK).next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    };
    Ok(Answer {
        readyz: section("readyz"),
        etcd_status: section("etcd-status"),
        etcd_members: section("etcd-members"),
        holds_vip: section("vip") == "yes",
        apiserver_cert: Some(format!("{}\n", section("cert"))),
    })
}

/// `etcdctl endpoint status -w json` of one endpoint.
fn parse_endpoint_status(json: &str) -> Option<EtcdMember> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let s = v.get(0)?.get("Status")?;
    let id = s.get("header")?.get("member_id")?.as_u64()?;
    let leader = s.get("leader")?.as_u64()?;
    Some(EtcdMember {
        member_id: format!("{id:x}"),
        is_leader: id == leader,
        is_learner: s
            .get("isLearner")
            .and_then(|l| l.as_bool())
            .unwrap_or(false),
        raft_index: s.get("raftIndex").and_then(|i| i.as_u64()).unwrap_or(0),
        lag: 0,
    })
}

/// `etcdctl member list -w json`.
fn parse_member_list(json: &str) -> Vec<MemberEntry> {
    let Ok(list) = serde_json::from_str::<crate::up::etcdctl::MemberList>(json) else {
        return vec![];
    };
    list.members
        .into_iter()
        .map(|m| MemberEntry {
            name: m.name,
            member_id: format!("{:x}", m.id),
            is_learner: m.is_learner,
        })
        .collect()
}

fn table(h: &ClusterHealth) -> String {
    let mut rows = vec![
        [
            "HOST",
            "ROLE",
            "ADDRESS",
            "APISERVER",
            "ETCD",
            "MEMBER",
            "RAFT INDEX",
            "LAG",
            "ENDPOINT",
            "CERT EXPIRES",
        ]
        .map(String::from),
    ];
    for c in h.controllers.iter().chain(&h.etcd_hosts) {
        if !c.error.is_empty() {
            rows.push([
                c.name.clone(),
                c.role.into(),
                c.address.clone(),
                "unreachable".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        let (member, index, lag) = match &c.etcd {
            Some(e) => (
                if e.is_learner {
                    "learner"
                } else if e.is_leader {
                    "leader"
                } else {
                    "follower"
                }
                .to_string(),
                e.raft_index.to_string(),
                e.lag.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let etcd_here = c.etcd.is_some() || c.role == "etcd" || h.etcd_hosts.is_empty();
        rows.push([
            c.name.clone(),
            c.role.into(),
            c.address.clone(),
            match (c.role, c.apiserver_ready) {
                ("etcd", _) => "-",
                (_, true) => "ready",
                (_, false) => "not ready",
            }
            .into(),
            match (etcd_here, c.etcd_healthy) {
                (false, _) => "-",
                (true, true) => "healthy",
                (true, false) => "unhealthy",
            }
            .into(),
            member,
            index,
            lag,
            if c.holds_endpoint { "holder" } else { "" }.into(),
            match (&c.apiserver_cert_expires, c.apiserver_cert_days_left) {
                (Some(t), Some(d)) => format!("{} ({d}d)", t.get(..10).unwrap_or(t)),
                _ => "-".into(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..10)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if let Some(e) = &h.endpoint {
        out.push_str(&format!("endpoint: {e}\n"));
    }
    out.push_str(if h.healthy {
        "healthy\n"
    } else {
        "NOT healthy: see the rows above (`kubeup ssh -f FILE HOST -- journalctl -u etcd -u kube-apiserver`)\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_status_names_the_leader_and_index() {
        let json = r#"[{"Endpoint":"https://127.0.0.1:2379","Status":{"header":{"cluster_id":1,"member_id":9560413964484536423,"revision":1186,"raft_term":2},"leader":9560413964484536423,"raftIndex":1416,"isLearner":false}}]"#;
        let m = parse_endpoint_status(json).unwrap();
        assert!(m.is_leader && !m.is_learner);
        assert_eq!(m.raft_index, 1416);
        assert_eq!(m.member_id, format!("{:x}", 9560413964484536423u64));
        assert!(parse_endpoint_status("").is_none());
    }

    #[test]
    fn member_list_keeps_learners_apart() {
        let json = r#"{"members":[{"ID":1,"name":"a","isLearner":true},{"ID":2,"name":"b"}]}"#;
        let m = parse_member_list(json);
        assert_eq!(m.len(), 2);
        assert!(m[0].is_learner && !m[1].is_learner);
        assert_eq!(m[1].name, "b");
    }
}
