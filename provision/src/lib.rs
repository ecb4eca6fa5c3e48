//! Shared by the `kubeup` CLI and the `kubeup-operator`: cluster.yaml
//! loading and validation, the PKI, SSH, artifacts and host plans.

pub mod addons;
pub mod artifacts;
pub mod config;
pub mod converge;
pub mod hostplan;
pub mod init;
pub mod phase;
pub mod pki;
pub mod ssh;
pub mod text;
