//! The WorkerJoin controller: "join this machine as a worker", nothing more.
//!
//! - [`reconcile`]: the controller loop: observe → decide → effects → write.
//! - [`observe`]/[`decide`]: what is there, and what to do (pure).
//! - [`phases`]: the join as one list of phases on the engine; [`cleanup`]:
//!   drain → reset → delete Node ([`removal`]).
//! - the trust boundary: [`specguard`] (input), [`nodeclaim`] (node-name
//!   ownership), [`access`] and [`knownhosts`] (SSH credentials and host
//!   keys), [`csr`] and [`nodetoken`] (credentials the node gets).

pub mod access;
pub mod apiservers;
pub mod cleanup;
pub mod credentials;
pub mod csr;
pub mod decide;
pub mod effects;
pub mod join;
pub mod knownhosts;
pub mod node;
pub mod nodeclaim;
pub mod nodesync;
pub mod nodetoken;
pub mod observe;
pub mod pending;
pub mod phases;
pub mod reconcile;
pub mod removal;
pub mod specguard;
pub mod status;
pub mod upgrade;
pub mod write;

pub use node::new_node;
