//! The operator's API client: kube's default stack (base URI, the
//! service account's refreshing token, kube's retry of 429/503/504) on
//! connections that notice a dead apiserver.
//!
//! Why not `kube::Client::try_default()`: its connections have no read
//! timeout and no TCP keepalive. The operator reaches the API through the
//! `kubernetes` Service, whose endpoints are every controller; when the
//! controller behind a pooled connection is stopped, a request or watch on
//! that connection waits for an answer that never comes, for ever (seen as
//! a `Cluster` status that stopped updating once the virtual IP's holder
//! went down). client-go has the same problem solved by HTTP/2 health
//! pings; here TCP does it: an idle connection is probed, and one whose
//! sent bytes (a request, a probe) go unacknowledged for [`USER_TIMEOUT`]
//! is closed, so the request fails, kube's watchers start again, and the
//! next connection goes to a controller that is up.

use std::time::Duration;

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::ServiceBuilder;
use tower::retry::RetryLayer;

/// A connection idle this long gets its first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Then one every so often.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
/// Sent bytes (data or probe) unacknowledged this long close the
/// connection: well above any apiserver's pause, well below the minutes a
/// controller's loss would otherwise go unnoticed.
pub const USER_TIMEOUT: Duration = Duration::from_secs(15);
/// A controller that is gone does not answer a SYN either.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for `config` whose connections notice a dead peer.
pub fn build(config: kube::Config) -> kube::Result<kube::Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_keepalive(Some(KEEPALIVE_IDLE));
    http.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
    http.set_tcp_user_timeout(Some(USER_TIMEOUT));
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper = HyperClient::builder(TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace))
}
