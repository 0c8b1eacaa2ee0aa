//! How the store is doing, seen from the process that uses it: call latency and failures
//! by backend operation, the SQLite writer's queue and its batch sizes. One set per
//! process (the backends record into it wherever they are opened); a process shows it on
//! `/metrics` by `Metrics::register_store`, as `herald_<process>_store_*` (docs/metrics.md).

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

use super::StoreResult;
use crate::metrics::LATENCY_BUCKETS;

/// The store's collectors (unregistered until a process's registry takes them).
pub struct StoreMetrics {
    /// `store_seconds{op}`: a call from start to answer. SQLite: `read` (on the reader
    /// pool) and `write` (from queueing to its batch's commit, so it includes waiting for
    /// the writer and for other processes' transactions). Redis: `command`, `pipeline`,
    /// `script`, one round trip each.
    pub seconds: HistogramVec,
    /// `store_failures_total{op}`: calls that ended in a `StoreError` (not absence).
    pub failures: IntCounterVec,
    /// `store_write_queue`: SQLite write jobs waiting for this process's writer threads.
    pub write_queue: IntGauge,
    /// `store_write_batch_jobs`: SQLite write jobs committed together (group commit).
    pub write_batch: Histogram,
}

/// This process's store metrics.
pub static STORE_METRICS: LazyLock<StoreMetrics> = LazyLock::new(|| StoreMetrics {
    seconds: HistogramVec::new(
        HistogramOpts::new(
            "store_seconds",
            "Store calls from start to answer, by backend operation.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["op"],
    )
    .expect("static metric"),
    failures: IntCounterVec::new(
        Opts::new(
            "store_failures_total",
            "Store calls that failed, by backend operation.",
        ),
        &["op"],
    )
    .expect("static metric"),
    write_queue: IntGauge::new(
        "store_write_queue",
        "SQLite write jobs waiting for this process's writer threads.",
    )
    .expect("static metric"),
    write_batch: Histogram::with_opts(
        HistogramOpts::new(
            "store_write_batch_jobs",
            "SQLite write jobs committed in one transaction.",
        )
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
    )
    .expect("static metric"),
});

/// Records one call of `op` that began at `started` and ended with `result`.
pub fn observe<T>(op: &str, started: Instant, result: &StoreResult<T>) {
    let metrics = &*STORE_METRICS;
    metrics
        .seconds
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics.failures.with_label_values(&[op]).inc();
    }
}
