//! Prometheus helpers. Each process owns one `Metrics` registry whose names are prefixed
//! `herald_<process>_`, so a metric's full name is `herald_<process>_<what>_<unit>`.
//! Labels stay bounded (outcomes, reasons), never user, token or queue ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// One process's registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry whose metric names start with `herald_<process>_`.
    pub fn new(process: &str) -> Metrics {
        let registry = Registry::new_custom(Some(format!("herald_{process}")), None)
            .expect("a static prefix is a valid metric name");
        Metrics { registry }
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help))
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels))
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help))
    }

    /// A histogram of seconds with `LATENCY_BUCKETS`.
    pub fn latency(&self, name: &str, help: &str) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.register(Histogram::with_opts(opts))
    }

    /// A labelled histogram of seconds with `LATENCY_BUCKETS`.
    pub fn latency_vec(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.register(HistogramVec::new(opts, labels))
    }

    /// Shows the store's collectors (`store::metrics`) in this registry, as
    /// `herald_<process>_store_*`; once per registry.
    pub fn register_store(&self) {
        let store = &*crate::store::metrics::STORE_METRICS;
        self.register(Ok(store.seconds.clone()));
        self.register(Ok(store.failures.clone()));
        self.register(Ok(store.write_queue.clone()));
        self.register(Ok(store.write_batch.clone()));
    }

    fn register<M>(&self, metric: prometheus::Result<M>) -> M
    where
        M: prometheus::core::Collector + Clone + 'static,
    {
        let metric = metric.expect("metric names and labels are static and valid");
        self.registry
            .register(Box::new(metric.clone()))
            .expect("each metric is registered once");
        metric
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The content type of `render`'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_process_prefix() {
        let metrics = Metrics::new("test");
        metrics.counter("things_total", "Things.").inc_by(3);
        metrics
            .counter_vec("outcomes_total", "Outcomes.", &["outcome"])
            .with_label_values(&["ok"])
            .inc();
        metrics.latency("wait_seconds", "Waits.").observe(0.003);
        let text = metrics.render();
        assert!(text.contains("herald_test_things_total 3"), "{text}");
        assert!(text.contains("herald_test_outcomes_total{outcome=\"ok\"} 1"));
        assert!(text.contains("herald_test_wait_seconds_bucket{le=\"0.005\"} 1"));
    }
}
