//! `kubeup init DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use kubeup_crds::Cluster;
use kubeup_crds::cluster::{ClusterSpec, ControlPlaneEndpoint, ControllerHost, EndpointKind};
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
    /// A controller's address (IPv4 or DNS name); repeat it for 3 or 5
    /// controllers.
    #[arg(long = "controller", default_value = "192.0.2.10")]
    pub controllers: Vec<String>,
    /// A dedicated etcd host's address; repeat it for 3 or 5 (default: etcd
    /// runs on each controller).
    #[arg(long = "etcd-host")]
    pub etcd_hosts: Vec<String>,
    /// A virtual IP kubeup's keepalived moves among the controllers, as the
    /// API's endpoint (`controlPlaneEndpoint`, kind VirtualIP).
    #[arg(long)]
    pub endpoint: Option<String>,
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
    if args.host_key.is_some() && args.controllers.len() + args.etcd_hosts.len() > 1 {
        anyhow::bail!(
            "--host-key pins one host's key: with several controllers, pin each in cluster.yaml (or leave it out to record each key on first use)"
        );
    }
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
    let host = |address: &String| ControllerHost {
        address: address.clone(),
        port: args.port,
        user: args.user.clone(),
        private_key_file: args.private_key_file.clone(),
        host_key: host_key.clone(),
        name: None,
        bastion: None,
    };
    let spec = ClusterSpec {
        kubernetes_version: kubeup_crds::cluster::DEFAULT_KUBERNETES_VERSION.into(),
        etcd: kubeup_crds::cluster::Etcd {
            external: args.etcd_hosts.iter().map(host).collect(),
        },
        controllers: args.controllers.iter().map(host).collect(),
        control_plane_endpoint: args.endpoint.as_ref().map(|address| ControlPlaneEndpoint {
            address: address.clone(),
            kind: EndpointKind::VirtualIP,
            port: kubeup_crds::cluster::API_PORT,
            virtual_router_id: 51,
        }),
        networking: Default::default(),
        artifacts: Default::default(),
        certificates: Default::default(),
        kubelet: Default::default(),
        addons: Default::default(),
    };
    Cluster::new(&args.name, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: InitArgs,
    }

    #[test]
    fn three_controllers_and_a_virtual_ip_make_a_valid_cluster_yaml() {
        let cli = Cli::parse_from([
            "init",
            "--controller",
            "192.0.2.10",
            "--controller",
            "192.0.2.11",
            "--controller",
            "192.0.2.12",
            "--endpoint",
            "192.0.2.100",
        ]);
        let text = kubeup_provision::config::render_cluster_yaml(&template(&cli.args));
        let cluster = kubeup_provision::config::parse(&text, std::path::Path::new("/nonexistent"))
            .unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(cluster.spec.controllers.len(), 3);
        assert_eq!(
            cluster.spec.control_plane_endpoint.map(|e| e.address),
            Some("192.0.2.100".to_string())
        );
        assert!(cluster.spec.etcd.is_stacked());
    }

    #[test]
    fn dedicated_etcd_hosts_make_a_valid_cluster_yaml() {
        let mut argv = vec!["init", "--controller", "192.0.2.10"];
        for a in ["192.0.2.20", "192.0.2.21", "192.0.2.22"] {
            argv.extend(["--etcd-host", a]);
        }
        let cli = Cli::parse_from(argv);
        let text = kubeup_provision::config::render_cluster_yaml(&template(&cli.args));
        assert!(text.contains("  # Dedicated etcd hosts"), "{text}");
        let cluster = kubeup_provision::config::parse(&text, std::path::Path::new("/nonexistent"))
            .unwrap_or_else(|p| panic!("{p:?}"));
        let hosts: Vec<&str> = cluster
            .spec
            .etcd
            .external
            .iter()
            .map(|h| h.address.as_str())
            .collect();
        assert_eq!(hosts, ["192.0.2.20", "192.0.2.21", "192.0.2.22"]);
    }
}
