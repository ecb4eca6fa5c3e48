//! `kubeup`: bring up a Kubernetes cluster on machines reachable over SSH.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod cmd_certs;
mod cmd_init;
mod cmd_join;
mod cmd_kubeconfig;
mod cmd_reset;
mod cmd_ssh;
mod cmd_status;
mod cmd_validate;
mod operator_manifests;
mod progress;
mod sandbox;
mod up;

#[derive(Parser)]
#[command(
    name = "kubeup",
    version,
    about = "Turn Linux machines reachable over SSH into a Kubernetes cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a cluster directory: a commented cluster.yaml and pki/.
    #[command(
        after_help = "Example:\n  kubeup init mycluster --controller 192.0.2.10 --private-key-file ~/.ssh/id_ed25519"
    )]
    Init(cmd_init::InitArgs),
    /// Check a cluster.yaml and print every problem with its field path.
    #[command(after_help = "Example:\n  kubeup validate -f mycluster/cluster.yaml")]
    Validate(ClusterFile),
    /// Local "bare-metal" hosts (systemd-nspawn) for trying kubeup and for tests.
    #[command(
        after_help = "Example:\n  kubeup sandbox up --hosts 3 --dir /tmp/demo\n  kubeup sandbox cut kube-xxxxxx-2 --dir /tmp/demo\n  kubeup sandbox down --dir /tmp/demo"
    )]
    Sandbox(sandbox::SandboxArgs),
    /// Bring up (or converge) the controller over SSH.
    #[command(
        after_help = "Example:\n  kubeup up -f mycluster/cluster.yaml\n  kubeup up -f mycluster/cluster.yaml -o json"
    )]
    Up(up::UpArgs),
    /// Show what `up` would change on the hosts, changing nothing.
    #[command(after_help = "Example:\n  kubeup plan -f mycluster/cluster.yaml")]
    Plan(up::UpArgs),
    /// Remove everything kubeup installed from the hosts.
    #[command(
        after_help = "Example:\n  kubeup reset -f mycluster/cluster.yaml --yes\n  kubeup reset -f mycluster/cluster.yaml 192.0.2.11 --yes"
    )]
    Reset(cmd_reset::ResetArgs),
    /// Print the admin kubeconfig, or merge it into ~/.kube/config.
    #[command(
        after_help = "Example:\n  kubeup kubeconfig -f mycluster/cluster.yaml > admin.kubeconfig\n  kubeup kubeconfig -f mycluster/cluster.yaml --merge"
    )]
    Kubeconfig(cmd_kubeconfig::KubeconfigArgs),
    /// Join a machine as a worker: create its SSH Secret and WorkerJoin.
    #[command(
        after_help = "Example:\n  kubeup join root@192.0.2.11 --key ~/.ssh/id_ed25519 --accept-new --wait -f mycluster/cluster.yaml\n  kubectl kubeup join root@192.0.2.11 --key ~/.ssh/id_ed25519 --host-key 'SHA256:…' --dry-run=client -o yaml"
    )]
    Join(cmd_join::JoinArgs),
    /// Run a command on a host of the cluster over kubeup's SSH transport.
    #[command(
        after_help = "Example:\n  kubeup ssh -f mycluster/cluster.yaml 192.0.2.10 -- journalctl -u kubelet -n 20"
    )]
    Ssh(cmd_ssh::SshArgs),
    /// Health of every controller: apiserver, etcd members, endpoint holder.
    #[command(
        after_help = "Example:\n  kubeup status -f mycluster/cluster.yaml\n  kubeup status -f mycluster/cluster.yaml -o json | jq '.controllers[] | select(.etcd.isLeader)'"
    )]
    Status(cmd_status::StatusArgs),
    /// Certificates of the cluster directory.
    #[command(
        after_help = "Example:\n  kubeup certs check -f mycluster/cluster.yaml --warn-days 60"
    )]
    Certs {
        #[command(subcommand)]
        command: cmd_certs::CertsCommand,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  source <(kubeup completion bash)\n  kubeup completion zsh > \"${fpath[1]}/_kubeup\"\n  kubeup completion fish > ~/.config/fish/completions/kubeup.fish"
    )]
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// The `-f cluster.yaml` every cluster command takes.
#[derive(Args, Clone, Debug)]
pub struct ClusterFile {
    /// The cluster definition; its directory holds pki/, known_hosts and admin.kubeconfig.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "cluster.yaml",
        env = "KUBEUP_CLUSTER"
    )]
    pub file: PathBuf,
}

/// Output format for reports.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Text,
    Json,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KUBEUP_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,kube_client::client::builder=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    // Pick rustls' provider explicitly: should a dependency ever link a second
    // one, TLS setup would otherwise panic at the first connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "kubeup", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(args) => cmd_init::run(args),
        Command::Validate(file) => cmd_validate::run(&file),
        Command::Certs { command } => cmd_certs::run(command),
        Command::Up(args) => up::run_up(args).await,
        Command::Plan(args) => up::run_plan(args).await,
        Command::Reset(args) => cmd_reset::run(args).await,
        Command::Kubeconfig(args) => cmd_kubeconfig::run(args),
        Command::Join(args) => cmd_join::run(args).await,
        Command::Status(args) => cmd_status::run(args).await,
        Command::Ssh(args) => cmd_ssh::run(args)
            .await
            .map(|code| ExitCode::from(code.clamp(0, 255) as u8)),
        Command::Sandbox(args) => sandbox::run(args).await.map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn completion_scripts_name_every_subcommand() {
        use clap::CommandFactory;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kubeup", &mut out);
            let text = String::from_utf8(out).unwrap();
            for sub in [
                "init",
                "validate",
                "up",
                "plan",
                "reset",
                "join",
                "sandbox",
                "certs",
                "completion",
            ] {
                assert!(text.contains(sub), "{shell}: {sub} missing");
            }
        }
    }
}
