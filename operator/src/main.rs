//! `kubeup-operator`: the in-cluster controller for `WorkerJoin` objects.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kubeup_operator::bundle::Bundles;
use kubeup_operator::context::Settings;
use kubeup_operator::{apiclient, controller, http, lease};
use kubeup_provision::artifacts::CompressedCache;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "kubeup-operator",
    version,
    about = "Joins machines described by WorkerJoin objects to the cluster"
)]
struct Args {
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "KUBEUP_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Joins running at once.
    #[arg(long, env = "KUBEUP_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// Directory holding the bundle per Kubernetes version (a read-only
    /// hostPath of the controller's /opt/kubeup/bundle).
    #[arg(long, env = "KUBEUP_BUNDLE_ROOT", default_value = "/opt/kubeup/bundle")]
    bundle_root: std::path::PathBuf,
    /// Where compressed copies of bundle files are kept for transfer (a
    /// hostPath on the controller, so they outlive the pod); empty: send
    /// files as they are.
    #[arg(
        long,
        env = "KUBEUP_TRANSFER_CACHE",
        default_value = "/var/cache/kubeup"
    )]
    transfer_cache: std::path::PathBuf,
    /// The operator's namespace (where it reads kube-root-ca.crt).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubeup-system")]
    namespace: String,
    /// Namespaces whose WorkerJoins and SSH Secrets are served (comma
    /// separated); empty: only the operator's own. The chart's RBAC grants
    /// Secret access in exactly these.
    #[arg(
        long,
        env = "KUBEUP_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,
    /// Seconds to wait for a CSR to be signed.
    #[arg(long, env = "KUBEUP_CSR_TIMEOUT", default_value_t = 60)]
    csr_timeout: u64,
    /// Seconds a drain may take before the delete is retried.
    #[arg(long, env = "KUBEUP_DRAIN_TIMEOUT", default_value_t = 120)]
    drain_timeout: u64,
    /// Seconds one phase of a join may run before it fails and the join
    /// is retried (a host or connection that stopped answering).
    #[arg(long, env = "KUBEUP_PHASE_TIMEOUT", default_value_t = 300)]
    phase_timeout: u64,
    /// Elect a leader through a Lease in the operator's namespace, so that
    /// several replicas can run and only one reconciles.
    #[arg(long, env = "KUBEUP_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// This replica's identity in the leader Lease (the pod's name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "KUBEUP_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One TLS provider for the process (ring, as kube is built with).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    if args.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        // Colours only on a terminal: a pod's log is a file.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stdout().is_terminal())
            .init();
    }
    let failed = "failed to create a Kubernetes client (in-cluster config or KUBECONFIG)";
    let config = kube::Config::infer().await.context(failed)?;
    let client = apiclient::build(config).context(failed)?;
    controller::check_crds(&client).await?;

    let settings = Settings {
        namespace: args.namespace,
        namespaces: args
            .watch_namespaces
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
        csr_timeout: Duration::from_secs(args.csr_timeout),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        phase_timeout: Duration::from_secs(args.phase_timeout),
        ..Settings::default()
    };
    let ready = Arc::new(AtomicBool::new(false));
    let slot = Arc::new(OnceLock::new());
    let state = http::HttpState {
        ready: ready.clone(),
        ctx: slot.clone(),
    };
    let addr = args.metrics_addr;
    tokio::spawn(async move {
        if let Err(e) = http::serve(addr, state).await {
            tracing::error!(error = %e, %addr, "the health/metrics server stopped");
        }
    });
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        concurrency = args.concurrency,
        "kubeup-operator starting"
    );
    let mut bundles = Bundles::new(args.bundle_root);
    if args.transfer_cache.as_os_str().is_empty() {
        tracing::info!("no transfer cache: bundle files are sent uncompressed");
    } else if let Err(e) = tempfile::tempfile_in(&args.transfer_cache) {
        tracing::warn!(
            dir = %args.transfer_cache.display(),
            error = %e,
            "the transfer cache is not writable: bundle files are sent uncompressed \
             (make the directory writable by this user, as `kubeup up` does)"
        );
    } else {
        bundles = bundles.with_compressed(CompressedCache::new(args.transfer_cache));
        // In the background (standbys too, so a failover finds them made).
        let bundles = bundles.clone();
        tokio::spawn(async move { bundles.prewarm().await });
    }
    let lease = args.leader_elect.then(|| lease::LeaseSettings {
        namespace: settings.namespace.clone(),
        identity: args
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("kubeup-operator-{}", std::process::id())),
        duration: LEASE_DURATION,
    });
    if let Some(lease) = &lease {
        // A standby replica is healthy and ready; it just does not reconcile.
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::select! {
            _renewing = lease::lead(client.clone(), lease.clone()) => {}
            () = shutdown_signal() => {
                tracing::info!("stopping before leading");
                return Ok(());
            }
        }
    }
    controller::run(
        client.clone(),
        bundles,
        settings,
        args.concurrency,
        ready,
        slot,
    )
    .await;
    // Hand over at once instead of letting the next replica wait out the
    // lease (a rolling update or a deleted pod fails over in about a second).
    if let Some(lease) = &lease {
        lease::release(&client, lease).await;
    }
    Ok(())
}

/// Targets match by prefix: `kube=warn` would also silence `kubeup_operator`.
const DEFAULT_LOG_FILTER: &str = "info,kube_client=warn,kube_runtime=warn";

/// How long a leader's Lease lasts without renewal (a leader gives up after two thirds of it without a renewal).
const LEASE_DURATION: Duration = Duration::from_secs(15);

async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // No SIGTERM handler (never seen on Linux): Ctrl-C still stops it.
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_keeps_the_operators_info_lines() {
        use tracing_subscriber::layer::SubscriberExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = {
            let seen = seen.clone();
            move || Capture(seen.clone())
        };
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(DEFAULT_LOG_FILTER))
            .with(tracing_subscriber::fmt::layer().with_writer(writer));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "kubeup_operator::workerjoin::join", "kept");
            tracing::info!(target: "kube_runtime::controller", "dropped");
            tracing::warn!(target: "kube_client::client", "kept too");
        });
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        assert!(text.contains("kept") && text.contains("kept too"), "{text}");
        assert!(!text.contains("dropped"), "{text}");
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
