//! The kubeup operator: three controllers on one runtime.
//!
//! - [`workerjoin`]: joins the machines `WorkerJoin` objects describe, keeps
//!   their Nodes in sync and resets them on delete. A reconcile reads
//!   observe → decide (pure) → effects (the join and cleanup procedures on
//!   the phase engine, `kubeup_provision::phase`) → write (status and
//!   Events in one place).
//! - [`serving`]: approves the kubelet-serving CSRs of the nodes it joined.
//! - [`certexpiry`]: reports the controller's certificate expiry.
//! - [`controlplane`]: reports every controller's apiserver readiness and
//!   who answers at the control-plane endpoint ([`endpoint`]).
//! - [`runtime`]: what they share: context, leader lease, metrics and
//!   health endpoints, the artifact bundle, single-object watches.
//!
//! Modules are crate-private; what the binary and the integration tests
//! use is re-exported below, so dead code warns.

pub mod certexpiry;
pub mod controlplane;
pub mod endpoint;
mod error;
mod runtime;
pub mod serving;
mod workerjoin;

pub use error::{Error, Result};
pub use runtime::{apiclient, bundle, context, http, lease};
pub use workerjoin::{csr, nodetoken};

/// The WorkerJoin controller as the binary and the tests start it.
pub mod controller {
    pub use crate::workerjoin::reconcile::{check_crds, run, still_there};
}

/// The Node a join makes before its kubelet starts.
pub mod join {
    pub use crate::workerjoin::new_node;
}
