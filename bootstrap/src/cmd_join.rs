//! `kubeup join USER@HOST --key FILE`: what a user would otherwise write as
//! YAML — the `kubernetes.io/ssh-auth` Secret and the WorkerJoin — created
//! through the API; `--wait` follows the join phase by phase to Ready.
//! Installed as `kubectl-kubeup` it works as `kubectl kubeup join`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kubeup_crds::host::{HostKeyPolicy, HostKeyTrust, SshSecretRef};
use kubeup_crds::{WorkerJoin, WorkerJoinPhase, WorkerJoinSpec};

use crate::Output;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The machine: `[USER@]HOST[:PORT]` (user root, port 22 by default).
    pub target: String,
    /// SSH private key file for the machine (stored in a Secret).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Pin the host key: an OpenSSH public key or a SHA256: fingerprint.
    #[arg(long, conflicts_with = "accept_new")]
    pub host_key: Option<String>,
    /// Trust the first host key seen and refuse any later change.
    #[arg(long)]
    pub accept_new: bool,
    /// Name of the WorkerJoin (and of its Secret, with `-ssh`).
    #[arg(long)]
    pub name: Option<String>,
    /// Node name; default: the machine's hostname.
    #[arg(long)]
    pub node_name: Option<String>,
    #[arg(long, short = 'n', default_value = "kubeup-system")]
    pub namespace: String,
    /// Kubeconfig to use; default: `admin.kubeconfig` beside `-f cluster.yaml`
    /// if given, else $KUBECONFIG / ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A cluster.yaml whose directory holds admin.kubeconfig.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Follow the join until the Node is Ready (exit 1 if it fails).
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// `client`: print the objects instead of creating them.
    #[arg(long, value_parser = ["client", "none"], default_value = "none")]
    pub dry_run: String,
    /// With --dry-run=client: yaml or json.
    #[arg(long, short = 'o', default_value = "yaml", value_parser = ["yaml", "json"])]
    pub output: String,
}

struct Target {
    user: String,
    host: String,
    port: u16,
}

fn parse_target(s: &str) -> Result<Target> {
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (u.to_string(), r),
        None => ("root".to_string(), s),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse().with_context(|| format!("{p:?} is not a port"))?,
        ),
        None => (rest.to_string(), 22),
    };
    if user.is_empty() || host.is_empty() {
        bail!("{s:?} is not USER@HOST[:PORT]");
    }
    Ok(Target { user, host, port })
}

/// The Secret and WorkerJoin for the arguments.
fn objects(args: &JoinArgs) -> Result<(Secret, WorkerJoin)> {
    let t = parse_target(&args.target)?;
    let key = std::fs::read(&args.key)
        .with_context(|| format!("failed to read the key file {}", args.key.display()))?;
    if !String::from_utf8_lossy(&key).contains("PRIVATE KEY") {
        bail!(
            "{} does not look like a private key (no PRIVATE KEY block)",
            args.key.display()
        );
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{}", t.host.replace(['.', ':'], "-")));
    let secret_name = format!("{name}-ssh");
    let host_key = match (&args.host_key, args.accept_new) {
        (Some(k), _) => HostKeyTrust {
            policy: HostKeyPolicy::Pin,
            key: Some(k.clone()),
        },
        (None, true) => HostKeyTrust {
            policy: HostKeyPolicy::AcceptNew,
            key: None,
        },
        (None, false) => bail!(
            "say how to trust {}'s host key: --host-key KEY (pin) or --accept-new",
            t.host
        ),
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(args.namespace.clone()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/ssh-auth".into()),
        data: Some(BTreeMap::from([(
            "ssh-privatekey".to_string(),
            ByteString(key),
        )])),
        ..Default::default()
    };
    let spec = WorkerJoinSpec {
        address: t.host,
        port: t.port,
        user: t.user,
        ssh_secret_ref: SshSecretRef {
            name: secret_name,
            sudo_password_key: None,
        },
        host_key,
        node_name: args.node_name.clone(),
        ..Default::default()
    };
    let mut wj = WorkerJoin::new(&name, spec);
    wj.metadata.namespace = Some(args.namespace.clone());
    Ok((secret, wj))
}

pub async fn run(args: JoinArgs) -> Result<ExitCode> {
    let (secret, wj) = objects(&args)?;
    if args.dry_run == "client" {
        print_objects(&args.output, &secret, &wj)?;
        return Ok(ExitCode::SUCCESS);
    }
    let client = client(&args).await?;
    let ns = &args.namespace;
    let name = wj
        .metadata
        .name
        .clone()
        .context("the WorkerJoin has no name")?;
    let secret_name = secret
        .metadata
        .name
        .as_deref()
        .context("the SSH Secret has no name")?;
    let pp = PatchParams::apply("kubeup-join").force();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            secret_name,
            &pp,
            &Patch::Apply(&with_types(&secret, "v1", "Secret")?),
        )
        .await
        .context("failed to create the SSH Secret")?;
    let api = Api::<WorkerJoin>::namespaced(client.clone(), ns);
    api.patch(&name, &pp, &Patch::Apply(&wj))
        .await
        .context("failed to create the WorkerJoin")?;
    println!("workerjoin.kubeup.dev/{name} applied in {ns}");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(
        &api,
        &name,
        &wj.spec.address,
        Duration::from_secs(args.timeout),
    )
    .await
}

fn with_types(secret: &Secret, api_version: &str, kind: &str) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(secret)?;
    let fields = v
        .as_object_mut()
        .context("a Secret serializes to a JSON object")?;
    fields.insert("apiVersion".into(), api_version.into());
    fields.insert("kind".into(), kind.into());
    Ok(v)
}

fn print_objects(format: &str, secret: &Secret, wj: &WorkerJoin) -> Result<()> {
    let docs = [
        with_types(secret, "v1", "Secret")?,
        serde_json::to_value(wj)?,
    ];
    for doc in docs {
        if format == "json" {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            print!("---\n{}", serde_yaml_ng::to_string(&doc)?);
        }
    }
    Ok(())
}

async fn client(args: &JoinArgs) -> Result<kube::Client> {
    let path = args.kubeconfig.clone().or_else(|| {
        args.file.as_ref().map(|f| {
            f.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .join("admin.kubeconfig")
        })
    });
    match path {
        Some(p) => crate::up::admin_client(&p).await,
        None => Ok(kube::Client::try_default()
            .await
            .context("no kubeconfig found: pass --kubeconfig or -f cluster.yaml")?),
    }
}

/// Show each phase as the operator records it, until Ready or Failed.
async fn follow(
    api: &Api<WorkerJoin>,
    name: &str,
    host: &str,
    timeout: Duration,
) -> Result<ExitCode> {
    let progress = Progress::new(Output::Text);
    let started = Instant::now();
    let mut current: Option<(WorkerJoinPhase, crate::progress::Phase<'_>)> = None;
    loop {
        let wj = api.get(name).await?;
        let status = wj.status.unwrap_or_default();
        if current.as_ref().map(|(p, _)| *p) != Some(status.phase) {
            if let Some((_, phase)) = current.take() {
                phase.done("");
            }
            match status.phase {
                WorkerJoinPhase::Ready => {
                    println!(
                        "{host} joined as node {}",
                        status.node_name.unwrap_or_default()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                WorkerJoinPhase::Failed => {
                    eprintln!(
                        "join of {host} failed: {}",
                        status.last_error.unwrap_or_default()
                    );
                    return Ok(ExitCode::FAILURE);
                }
                p => current = Some((p, progress.phase(host, p.as_str()))),
            }
        }
        if started.elapsed() > timeout {
            if let Some((_, phase)) = current.take() {
                phase.fail("timed out");
            }
            bail!(
                "{host} was not Ready after {timeout:?}; last error: {}",
                status.last_error.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = parse_target("kube@198.18.0.12:2222").unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("kube", "198.18.0.12", 2222)
        );
        let t = parse_target("node1").unwrap();
        assert_eq!((t.user.as_str(), t.port), ("root", 22));
        assert!(parse_target("@x").is_err());
        assert!(parse_target("a@b:notaport").is_err());
    }
}
