//! The kubeup operator: joins machines described by `WorkerJoin` objects.
//!
//! Shape (kube-rs controller-rs): [`controller::reconcile`] runs
//! `finalizer()` outermost; inside, read → validate → plan ([`plan`], pure)
//! → act ([`join`], [`cleanup`]) → status ([`status`], server-side apply
//! with one field manager). Metrics and health on [`http`].

pub mod access;
pub mod bundle;
pub mod certexpiry;
pub mod cleanup;
pub mod context;
pub mod controller;
pub mod csr;
pub mod error;
pub mod http;
pub mod join;
pub mod knownhosts;
pub mod lease;
pub mod metrics;
pub mod nodeclaim;
pub mod nodesync;
pub mod nodetoken;
pub mod pending;
pub mod plan;
pub mod serving;
pub mod specguard;
pub mod status;
mod upgrade;
pub mod watchone;

pub use error::{Error, Result};
