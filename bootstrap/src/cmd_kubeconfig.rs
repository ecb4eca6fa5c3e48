//! `kubeup kubeconfig -f cluster.yaml [--merge]`: print the admin
//! kubeconfig, or merge it into ~/.kube/config as a context named after
//! the cluster without touching other contexts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use kube::config::{Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};

use crate::ClusterFile;

#[derive(Args, Debug)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub file: ClusterFile,
    /// Merge into this kubeconfig (default ~/.kube/config, or $KUBECONFIG's first file).
    #[arg(long)]
    pub merge: bool,
    /// The kubeconfig to merge into.
    #[arg(long, requires = "merge")]
    pub into: Option<PathBuf>,
}

pub fn run(args: KubeconfigArgs) -> Result<ExitCode> {
    let loaded = kubeup_provision::config::load(&args.file.file)?;
    let path = loaded.admin_kubeconfig();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "failed to read {} (it is written by `kubeup up`)",
            path.display()
        )
    })?;
    if !args.merge {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let target = args.into.clone().unwrap_or_else(default_kubeconfig);
    let ours = Kubeconfig::from_yaml(&text)?;
    let mut theirs = if target.exists() {
        Kubeconfig::read_from(&target)?
    } else {
        Kubeconfig::default()
    };
    let merged = merge(&mut theirs, ours, loaded.name());
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let yaml = serde_yaml_ng::to_string(&theirs)?;
    let secret = secrecy::SecretString::from(yaml);
    kubeup_provision::pki::write_private(&target, &secret)?;
    println!(
        "{merged} context {:?} in {}",
        loaded.name(),
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn default_kubeconfig() -> PathBuf {
    if let Some(first) =
        std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next())
    {
        return first;
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config")
}

/// Replace (or add) the cluster, user and context named `name`; keep all others.
fn merge(into: &mut Kubeconfig, ours: Kubeconfig, name: &str) -> &'static str {
    let existed = into.contexts.iter().any(|c| c.name == name);
    let cluster = ours.clusters.into_iter().next().map(|c| NamedCluster {
        name: name.into(),
        ..c
    });
    let user = ours.auth_infos.into_iter().next().map(|u| NamedAuthInfo {
        name: format!("{name}-admin"),
        ..u
    });
    into.clusters.retain(|c| c.name != name);
    into.auth_infos
        .retain(|u| u.name != format!("{name}-admin"));
    into.contexts.retain(|c| c.name != name);
    into.clusters.extend(cluster);
    into.auth_infos.extend(user);
    into.contexts.push(NamedContext {
        name: name.into(),
        context: Some(kube::config::Context {
            cluster: name.into(),
            user: Some(format!("{name}-admin")),
            ..Default::default()
        }),
        ..Default::default()
    });
    if into.current_context.is_none() {
        into.current_context = Some(name.into());
    }
    if existed { "updated" } else { "added" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_other_contexts() {
        let ours = Kubeconfig::from_yaml(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {server: 'https://198.18.0.11:6443'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: x, user: u}\ncurrent-context: x\n",
        )
        .unwrap();
        let mut theirs = Kubeconfig::from_yaml(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://prod:6443'}\nusers:\n- name: me\n  user: {token: p}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\ncurrent-context: prod\n",
        )
        .unwrap();
        assert_eq!(merge(&mut theirs, ours.clone(), "demo"), "added");
        assert_eq!(merge(&mut theirs, ours, "demo"), "updated");
        let names: Vec<&str> = theirs.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["prod", "demo"]);
        assert_eq!(theirs.current_context.as_deref(), Some("prod"));
        assert_eq!(theirs.clusters.len(), 2);
    }
}
