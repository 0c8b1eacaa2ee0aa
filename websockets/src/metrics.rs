//! The edge's Prometheus metrics (`herald_websockets_*`), in one place.

use common::metrics::Metrics;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

/// Every metric the edge records.
pub struct EdgeMetrics {
    pub registry: Metrics,
    pub connections: IntGauge,
    pub socket_events_dropped: IntCounter,
    pub sockets: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub live: IntCounterVec,
    pub slow_consumers: IntCounter,
    pub router_envelopes: IntCounterVec,
    pub anomalies: IntCounterVec,
    pub resubscribes: IntCounter,
    pub recoveries: IntCounterVec,
    pub recovered: IntCounter,
    pub withheld: IntCounter,
    pub broadcasts: IntCounterVec,
    pub recovery_streams: IntCounterVec,
    pub invalid_envelopes: IntCounter,
    pub bad_frames: IntCounter,
    pub delivery_latency: Histogram,
    pub resident_memory: IntGauge,
}

impl EdgeMetrics {
    pub fn new() -> EdgeMetrics {
        let m = Metrics::new("websockets");
        m.register_store();
        EdgeMetrics {
            connections: m.gauge("connections", "Open client sockets."),
            socket_events_dropped: m.counter(
                "socket_events_dropped_total",
                "Connected/disconnected events dropped because too many waited to be recorded.",
            ),
            sockets: m.counter_vec("sockets_total", "Socket attempts by outcome.", &["outcome"]),
            deliveries: m.counter_vec(
                "deliveries_total",
                "Frames queued to sockets, by path.",
                &["path"],
            ),
            live: m.counter_vec(
                "live_entries_total",
                "Entries arriving from routers, by what became of them (delivered, duplicate, parked after a gap, park_full, other_epoch, not_here).",
                &["outcome"],
            ),
            slow_consumers: m.counter(
                "slow_consumer_closes_total",
                "Sockets closed 4008 for a full outbound queue.",
            ),
            router_envelopes: m.counter_vec(
                "router_envelopes_total",
                "Envelopes received from routers.",
                &["kind"],
            ),
            anomalies: m.counter_vec(
                "router_anomalies_total",
                "Possible losses detected on router streams.",
                &["reason"],
            ),
            resubscribes: m.counter(
                "router_resubscribes_total",
                "SUB sockets replaced after a router stayed silent.",
            ),
            recoveries: m.counter_vec(
                "recoveries_total",
                "Recovery passes by outcome (ok, error).",
                &["outcome"],
            ),
            recovered: m.counter(
                "recovered_deliveries_total",
                "Frames queued to sockets from entries recovery read from the store.",
            ),
            withheld: m.counter(
                "withheld_messages_total",
                "Addressed messages not handed to sockets: cancelled or expired before they reached this edge.",
            ),
            broadcasts: m.counter_vec(
                "broadcasts_total",
                "Broadcasts handled for this edge's users, by result (reached, failed, dropped).",
                &["result"],
            ),
            recovery_streams: m.counter_vec(
                "recovery_streams_total",
                "Streams checked by recovery, by outcome (up_to_date, caught_up, too_far_behind, gone).",
                &["outcome"],
            ),
            invalid_envelopes: m.counter("invalid_envelopes_total", "Malformed envelopes dropped."),
            bad_frames: m.counter(
                "bad_frames_total",
                "Client frames the dialect does not accept.",
            ),
            delivery_latency: m.latency(
                "delivery_latency_seconds",
                "From the API publishing to the frame being queued on a socket.",
            ),
            resident_memory: m.gauge(
                "resident_memory_bytes",
                "Resident set size of this process.",
            ),
            registry: m,
        }
    }

    /// The exposition text, refreshing the RSS gauge first.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.resident_memory.set(rss);
        }
        self.registry.render()
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        EdgeMetrics::new()
    }
}

/// This process's resident set size, from /proc/self/statm (Linux).
pub fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
