//! Prometheus metrics, prefix `kubeup_operator_`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

use kubeup_crds::workerjoin::WorkerJoinPhase as Phase;

/// Count per phase, and how many have work left (not Ready, Failed or
/// DryRunComplete).
pub fn workerjoin_counts(phases: &[Phase]) -> (Vec<(String, i64)>, i64) {
    // Every phase, so a phase that emptied reads 0.
    let by_phase = Phase::ALL
        .iter()
        .map(|p| {
            let n = phases.iter().filter(|q| *q == p).count() as i64;
            (p.as_str().to_string(), n)
        })
        .collect();
    let pending = phases.iter().filter(|p| !p.is_settled()).count() as i64;
    (by_phase, pending)
}

fn phase_histogram() -> Histogram {
    // 50 ms … ~7 min
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    pub joins_started: Counter,
    pub joins_succeeded: Counter,
    pub joins_failed: Family<Labels, Counter>,
    pub joins_in_flight: Gauge,
    pub phase_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub join_duration: Histogram,
    pub ssh_errors: Family<Labels, Counter>,
    pub reconcile_errors: Family<Labels, Counter>,
    pub serving_csrs: Family<Labels, Counter>,
    pub workerjoins: Family<Labels, Gauge>,
    pub queue_depth: Gauge,
    pub certificate_expiry: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubeup_operator");
        let m = Self {
            joins_started: Counter::default(),
            joins_succeeded: Counter::default(),
            joins_failed: Family::default(),
            joins_in_flight: Gauge::default(),
            phase_duration: Family::new_with_constructor(phase_histogram as fn() -> Histogram),
            join_duration: phase_histogram(),
            ssh_errors: Family::default(),
            reconcile_errors: Family::default(),
            serving_csrs: Family::default(),
            workerjoins: Family::default(),
            queue_depth: Gauge::default(),
            certificate_expiry: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "joins_started",
            "Join attempts started",
            m.joins_started.clone(),
        );
        registry.register(
            "joins_succeeded",
            "Joins that reached Ready",
            m.joins_succeeded.clone(),
        );
        registry.register(
            "joins_failed",
            "Join attempts that failed, by reason",
            m.joins_failed.clone(),
        );
        registry.register(
            "joins_in_flight",
            "Joins running now",
            m.joins_in_flight.clone(),
        );
        registry.register(
            "phase_duration_seconds",
            "Time spent in each join phase",
            m.phase_duration.clone(),
        );
        registry.register(
            "join_duration_seconds",
            "From the first phase to Ready, per successful attempt",
            m.join_duration.clone(),
        );
        registry.register("ssh_errors", "SSH errors by category", m.ssh_errors.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile errors by reason",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "serving_csrs",
            "kubelet-serving CSRs seen: approved, or the reason left unapproved",
            m.serving_csrs.clone(),
        );
        registry.register(
            "workerjoins",
            "WorkerJoin objects by phase",
            m.workerjoins.clone(),
        );
        registry.register(
            "queue_depth",
            "WorkerJoins with work left (joining, waiting for a retry or being deleted) beyond the joins running now",
            m.queue_depth.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until each controller certificate expires (negative: expired), from ConfigMap kubeup-certificates",
            m.certificate_expiry.clone(),
        );
        Self { registry, ..m }
    }

    pub fn observe_phase(&self, phase: &str, secs: f64) {
        self.phase_duration
            .get_or_create(&vec![("phase".to_string(), phase.to_string())])
            .observe(secs);
    }

    pub fn ssh_error(&self, category: &str) {
        self.ssh_errors
            .get_or_create(&vec![("category".to_string(), category.to_string())])
            .inc();
    }

    pub fn join_failed(&self, reason: &str) {
        self.joins_failed
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    pub fn reconcile_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    pub fn serving_csr(&self, result: &str) {
        self.serving_csrs
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
    }

    /// Gauges from the WorkerJoins as the operator sees them now.
    pub fn observe_workerjoins(&self, phases: &[Phase]) {
        let (by_phase, pending) = workerjoin_counts(phases);
        for (phase, n) in by_phase {
            self.workerjoins
                .get_or_create(&vec![("phase".to_string(), phase)])
                .set(n);
        }
        let running = self.joins_in_flight.get();
        self.queue_depth.set((pending - running).max(0));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an empty page is the fallback.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depth_counts_work_left_beyond_running_joins() {
        let m = Metrics::new();
        m.joins_in_flight.inc();
        m.observe_workerjoins(&[
            Phase::Ready,
            Phase::Installing,
            Phase::Connecting,
            Phase::Failed,
            Phase::Pending,
        ]);
        let text = m.render();
        assert!(text.contains("kubeup_operator_queue_depth 2"), "{text}");
        assert!(
            text.contains("kubeup_operator_workerjoins{phase=\"Ready\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kubeup_operator_workerjoins{phase=\"Deleting\"} 0"),
            "{text}"
        );
        m.observe_workerjoins(&[]);
        assert!(m.render().contains("kubeup_operator_queue_depth 0"));
    }

    #[test]
    fn renders_with_prefix() {
        let m = Metrics::new();
        m.joins_started.inc();
        m.observe_phase("Installing", 1.5);
        m.ssh_error("connect_timeout");
        let text = m.render();
        assert!(
            text.contains("kubeup_operator_joins_started_total 1"),
            "{text}"
        );
        assert!(
            text.contains("kubeup_operator_phase_duration_seconds_bucket{le="),
            "{text}"
        );
        assert!(text.contains("phase=\"Installing\""), "{text}");
        assert!(
            text.contains("kubeup_operator_ssh_errors_total{category=\"connect_timeout\"} 1"),
            "{text}"
        );
    }
}
