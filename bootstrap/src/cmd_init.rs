//! `kubeup init DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use kubeup_crds::Cluster;
use kubeup_crds::cluster::{ClusterSpec, ControllerHost};
use kubeup_crds::host::{HostKeyPolicy, HostKeyTrust};
use kubeup_provision::init::init_cluster_dir;
use kubeup_provision::pki::InitOutcome;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The cluster directory to create (or complete).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Cluster name (metadata.name).
    #[arg(long, default_value = "kubeup")]
    pub name: String,
    /// The controller's address (IPv4 or DNS name).
    #[arg(long, default_value = "192.0.2.10")]
    pub controller: String,
    /// SSH user on the controller.
    #[arg(long, default_value = "root")]
    pub user: String,
    /// SSH port on the controller.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// SSH private key file (relative to DIR or absolute); default: ssh-agent.
    #[arg(long)]
    pub private_key_file: Option<String>,
    /// Pin the controller's host key (OpenSSH public key or SHA256: fingerprint);
    /// without it the first key seen is recorded in DIR/known_hosts (AcceptNew).
    #[arg(long)]
    pub host_key: Option<String>,
}

pub fn run(args: InitArgs) -> Result<ExitCode> {
    let cluster = template(&args);
    let summary = init_cluster_dir(&args.dir, &cluster).with_context(|| {
        format!(
            "failed to initialise the cluster directory {}",
            args.dir.display()
        )
    })?;
    let verb = |created: bool| if created { "created" } else { "kept   " };
    println!(
        "{} {}",
        verb(summary.cluster_yaml_created),
        summary.cluster_yaml.display()
    );
    for item in &summary.pki.items {
        let files: Vec<String> = item.files.iter().map(|f| f.display().to_string()).collect();
        println!(
            "{} {:<20} {}",
            verb(item.outcome == InitOutcome::Created),
            item.name,
            files.join(", ")
        );
    }
    println!(
        "\nNext: edit {} (controller address, key), then `kubeup validate -f {0}`.",
        summary.cluster_yaml.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn template(args: &InitArgs) -> Cluster {
    let host_key = match &args.host_key {
        Some(key) => HostKeyTrust {
            policy: HostKeyPolicy::Pin,
            key: Some(key.clone()),
        },
        None => HostKeyTrust {
            policy: HostKeyPolicy::AcceptNew,
            key: None,
        },
    };
    let spec = ClusterSpec {
        kubernetes_version: kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION.into(),
        controllers: vec![ControllerHost {
            address: args.controller.clone(),
            port: args.port,
            user: args.user.clone(),
            private_key_file: args.private_key_file.clone(),
            host_key,
            name: None,
            bastion: None,
        }],
        control_plane_endpoint: None,
        networking: Default::default(),
        artifacts: Default::default(),
        certificates: Default::default(),
        kubelet: Default::default(),
        addons: Default::default(),
    };
    Cluster::new(&args.name, spec)
}
