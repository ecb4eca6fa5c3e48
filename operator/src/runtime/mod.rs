//! What the operator's controllers share: the API client, the context
//! (client, settings, caches, Events), the leader lease, metrics and health
//! endpoints, the artifact bundle and single-object watches.

pub mod apiclient;
pub mod bundle;
pub mod context;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod watch;
