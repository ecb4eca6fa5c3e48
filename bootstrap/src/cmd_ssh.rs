//! `kubeup ssh -f cluster.yaml HOST -- CMD…`: run one command on a host of
//! the cluster with exactly the transport and trust policy `kubeup up`
//! uses (cluster directory `known_hosts`, pins, bastion, sudo), and exit
//! with the remote exit status.
//!
//! Every word after `--` is passed as one argument (shell-quoted), like
//! `execvp`; for pipes or redirections run a shell explicitly:
//! `kubeup ssh HOST -- sh -c 'journalctl -u kubelet | tail'`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use kubeup_crds::cluster::ControllerHost;
use kubeup_crds::host::Reachable;
use kubeup_provision::config;
use kubeup_provision::ssh::{
    Auth, Command, KnownHostsFile, Secret, Session, SshOptions, SshTarget,
};

/// Environment variable holding the sudo password of a non-root SSH user.
pub const SUDO_PASSWORD_ENV: &str = "KUBEUP_SUDO_PASSWORD";
/// Environment variable holding the passphrase of an encrypted private key.
pub const KEY_PASSPHRASE_ENV: &str = "KUBEUP_SSH_KEY_PASSPHRASE";

#[derive(Args, Debug, Clone)]
pub struct SshArgs {
    /// The cluster definition; its directory holds known_hosts and the keys.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "cluster.yaml",
        env = "KUBEUP_CLUSTER"
    )]
    pub file: PathBuf,
    /// The controller to run on: its name or address as in cluster.yaml.
    pub host: String,
    /// Run the command as root (through `sudo` for a non-root SSH user).
    #[arg(long)]
    pub sudo: bool,
    /// File holding the sudo password for a user whose sudo asks for one
    /// (or set KUBEUP_SUDO_PASSWORD). Sent on stdin, never logged.
    #[arg(long, value_name = "FILE")]
    pub sudo_password_file: Option<PathBuf>,
    /// Give up on the command after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// Run the command; the result is the remote exit status (255 when the
/// command was killed by a signal, as `ssh` does).
pub async fn run(args: SshArgs) -> Result<i32> {
    let loaded = config::load(&args.file)?;
    let controllers = &loaded.cluster.spec.controllers;
    let host = controllers
        .iter()
        .find(|c| c.address == args.host || c.name.as_deref() == Some(args.host.as_str()))
        .with_context(|| {
            let known: Vec<String> = controllers
                .iter()
                .map(|c| match &c.name {
                    Some(n) => format!("{n} ({})", c.address),
                    None => c.address.clone(),
                })
                .collect();
            format!(
                "no host {:?} in {}: the cluster has {}",
                args.host,
                args.file.display(),
                known.join(", ")
            )
        })?;

    let session = connect(
        &loaded,
        host,
        sudo_password(&args)?,
        &SshOptions::default(),
        |label| format!("failed to connect to {label}"),
    )
    .await?;

    let Some((program, program_args)) = args.command.split_first() else {
        bail!("give the command to run after `--`");
    };
    let mut cmd = Command::new(program)
        .args(program_args)
        .timeout(Duration::from_secs(args.timeout));
    if args.sudo {
        cmd = cmd.privileged();
    }
    let out = session.output(&cmd).await?;
    use std::io::Write;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    session.close().await;
    Ok(out.exit_status.map(|c| c as i32).unwrap_or(255))
}

/// A session to a controller of `loaded`, its host key checked against the
/// cluster directory's known_hosts; `failed` says what a failure means,
/// given the target's label (`user@host:port`).
pub async fn connect(
    loaded: &config::LoadedCluster,
    host: &ControllerHost,
    sudo_password: Option<Secret>,
    options: &SshOptions,
    failed: impl FnOnce(&str) -> String,
) -> Result<Session> {
    let mut target = target_for(host, &|p| loaded.resolve(p))?;
    target.sudo_password = sudo_password;
    let store = Arc::new(KnownHostsFile::new(loaded.known_hosts()));
    Session::connect(&target, store, options)
        .await
        .with_context(|| failed(&target.label()))
}

/// The SSH target of a controller: key file (relative to the cluster
/// directory) or the ssh-agent, host-key trust, bastion (same key).
pub fn target_for(host: &ControllerHost, resolve: &dyn Fn(&str) -> PathBuf) -> Result<SshTarget> {
    let passphrase = std::env::var(KEY_PASSPHRASE_ENV).ok().map(Secret::from);
    let auth = match &host.private_key_file {
        Some(p) => Auth::KeyFile {
            path: resolve(p),
            passphrase,
        },
        None => {
            if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                bail!(
                    "controller {} has no privateKeyFile and SSH_AUTH_SOCK is not set: \
                     set spec.controllers[].privateKeyFile or start an ssh-agent",
                    host.address
                );
            }
            Auth::Agent
        }
    };
    let mut target = SshTarget::reach(host.endpoint(), auth.clone());
    if let Some(b) = &host.bastion {
        target.bastion = Some(Box::new(SshTarget::reach(b.endpoint(), auth)));
    }
    Ok(target)
}

fn sudo_password(args: &SshArgs) -> Result<Option<Secret>> {
    if let Some(path) = &args.sudo_password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the sudo password file {}", path.display()))?;
        // One line; a trailing newline from `echo pw > file` is not part of it.
        let pw = text.lines().next().unwrap_or_default().to_owned();
        return Ok(Some(Secret::new(pw)));
    }
    Ok(std::env::var(SUDO_PASSWORD_ENV).ok().map(Secret::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ssh: SshArgs,
    }

    #[test]
    fn parses_command_after_double_dash() {
        let cli = Cli::parse_from(["kubeup", "-f", "c.yaml", "ctl", "--", "ls", "-la", "/etc"]);
        assert_eq!(cli.ssh.host, "ctl");
        assert_eq!(cli.ssh.command, ["ls", "-la", "/etc"]);
        assert!(!cli.ssh.sudo);
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn target_from_controller() {
        let host: ControllerHost = serde_yaml_ng::from_str(
            "address: 10.0.0.5\nuser: admin\nprivateKeyFile: id_ed25519\nbastion:\n  address: 1.2.3.4\n",
        )
        .unwrap();
        let t = target_for(&host, &|p| PathBuf::from("/cluster").join(p)).unwrap();
        assert_eq!(t.label(), "admin@10.0.0.5:22");
        assert!(
            matches!(&t.auth, Auth::KeyFile { path, .. } if path == &PathBuf::from("/cluster/id_ed25519"))
        );
        let b = t.bastion.unwrap();
        assert_eq!(b.addr(), "1.2.3.4:22");
        assert_eq!(b.user, "root");
    }
}
