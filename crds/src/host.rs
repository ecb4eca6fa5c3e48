//! How to reach a machine over SSH and how far to trust it: shared by
//! `WorkerJoin` and the `Cluster`'s controller hosts.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Address pattern: an IPv4 address or a DNS name (IPv6 literals are not
/// supported yet).
pub const ADDRESS_PATTERN: &str = r"^(([0-9]{1,3}\.){3}[0-9]{1,3}|[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*)$";

/// How the machine's SSH host key is trusted. There is deliberately no
/// "accept anything" policy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum HostKeyPolicy {
    /// Only the key given in `hostKey.key` is accepted.
    Pin,
    /// The first key seen is recorded (known_hosts for the CLI, status for
    /// the operator) and any later change is refused.
    #[default]
    AcceptNew,
}

/// Host-key trust for one machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.policy != 'Pin' || has(self.key)").message("hostKey.key is required when policy is Pin"))]
pub struct HostKeyTrust {
    /// `Pin` (only `key` is accepted) or `AcceptNew` (first key recorded,
    /// later changes refused).
    #[serde(default)]
    pub policy: HostKeyPolicy,
    /// The expected host key: an OpenSSH public key line
    /// (`ssh-ed25519 AAAA…`) or a fingerprint (`SHA256:…`, as printed by
    /// `ssh-keygen -lf`). Required with `Pin`; with `AcceptNew` ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(SHA256:[A-Za-z0-9+/]{43}=?|(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/=]+( .*)?)$"
    ))]
    pub key: Option<String>,
}

/// A reference to a Secret of type `kubernetes.io/ssh-auth` in the same
/// namespace (the private key under `ssh-privatekey`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshSecretRef {
    /// Name of the Secret (type `kubernetes.io/ssh-auth`).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Optional key in the same Secret holding the sudo password for a
    /// non-root user whose sudo asks for one. Fed on stdin, never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_password_key: Option<String>,
}

/// A jump host the machine is reached through (an SSH `direct-tcpip` channel).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bastion {
    /// IPv4 address or DNS name of the bastion.
    #[schemars(pattern(ADDRESS_PATTERN))]
    pub address: String,
    /// SSH port of the bastion.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// SSH user on the bastion.
    #[serde(default = "default_user")]
    pub user: String,
    /// Secret with the bastion's private key (type `kubernetes.io/ssh-auth`).
    /// Unset: the target's Secret is used for the bastion too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SshSecretRef>,
    /// Host-key trust for the bastion itself.
    #[serde(default)]
    pub host_key: HostKeyTrust,
}

/// Where and as whom to connect, and how far to trust the host key: the one
/// view the SSH transport takes of a controller, a WorkerJoin's machine and
/// a bastion. Each keeps its own schema (and CEL rules): serde cannot
/// flatten a shared struct into a type that refuses unknown fields, as
/// cluster.yaml's types do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint<'a> {
    pub address: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub host_key: &'a HostKeyTrust,
}

/// Something reached over SSH.
pub trait Reachable {
    fn endpoint(&self) -> Endpoint<'_>;
}

impl Reachable for Bastion {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            address: &self.address,
            port: self.port,
            user: &self.user,
            host_key: &self.host_key,
        }
    }
}

pub fn default_port() -> u16 {
    22
}

pub fn default_user() -> String {
    "root".into()
}
