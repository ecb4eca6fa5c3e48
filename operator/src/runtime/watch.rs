//! Following one object by name: a change is seen the moment it happens,
//! not at the next poll (a CSR's certificate, a Node turning Ready).

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// The object `name` as it is now and after each change (`None` once it is
/// deleted), until `deadline`, when the stream ends. Watch errors are
/// logged; the watcher backs off and resumes by itself.
pub fn changes<K>(
    api: Api<K>,
    name: &str,
    deadline: tokio::time::Instant,
) -> impl Stream<Item = Option<K>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let name = name.to_owned();
    watcher(api, cfg)
        .default_backoff()
        .filter_map(move |event| {
            let seen = match event {
                Ok(watcher::Event::Apply(k) | watcher::Event::InitApply(k)) => Some(Some(k)),
                Ok(watcher::Event::Delete(_)) => Some(None),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(e) => {
                    tracing::warn!(error = %e, object = %name, "watch failed; retrying");
                    None
                }
            };
            futures::future::ready(seen)
        })
        .take_until(tokio::time::sleep_until(deadline))
}
