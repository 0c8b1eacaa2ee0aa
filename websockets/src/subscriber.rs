//! One SUB socket per configured router, and the bookkeeping that turns ZeroMQ's silent
//! losses into recovery requests.
//!
//! zmq.rs SUB sockets reconnect by themselves after a router restarts, but whatever was
//! published meanwhile is gone. Each envelope carries the router's epoch and sequence
//! number (`common::wire`), so per router this edge notices: a new epoch (the router
//! restarted, or first contact), a gap in the sequence (PUB queue overflow, reconnect
//! window), a heartbeat ahead of the last sequence seen (trailing loss), and silence
//! (no envelope for `router_silence_ms`: the router died or stopped with envelopes in
//! flight). The router link does not say which streams lost what, so each of these asks
//! the recovery worker to check every stream here against the store by position; during a
//! silence it asks again every period, so deliveries go on (from the store) while a router
//! is stuck.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clock::now_us;
use common::wire::{Envelope, Header, Kind};
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketOptions, SocketRecv, SubSocket};

use crate::EdgeState;

/// Why a stream may have lost envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// First envelope from this router since the edge started.
    FirstContact,
    /// The router restarted (epoch changed).
    NewEpoch,
    /// Sequence numbers skipped.
    Gap,
    /// Nothing heard for longer than the silence bound.
    Silence,
}

impl Anomaly {
    pub fn label(self) -> &'static str {
        match self {
            Anomaly::FirstContact => "first_contact",
            Anomaly::NewEpoch => "new_epoch",
            Anomaly::Gap => "gap",
            Anomaly::Silence => "silence",
        }
    }
}

/// What the edge knows about one router's stream.
#[derive(Debug, Clone)]
pub struct StreamState {
    pub epoch: Option<u64>,
    pub last_seq: u64,
    /// Local time (µs) the last envelope arrived: liveness.
    pub last_heard_us: i64,
    /// True after a silence was reported, until the next envelope.
    pub silent: bool,
}

impl StreamState {
    /// A stream not heard from yet; `since_us` is when listening started.
    pub fn new(since_us: i64) -> StreamState {
        StreamState {
            epoch: None,
            last_seq: 0,
            last_heard_us: since_us,
            silent: false,
        }
    }

    /// Accounts for one envelope; returns the anomaly it reveals.
    pub fn observe(&mut self, header: &Header, now_us: i64) -> Option<Anomaly> {
        let anomaly = match self.epoch {
            None => Some(Anomaly::FirstContact),
            Some(epoch) if epoch != header.epoch => Some(Anomaly::NewEpoch),
            Some(_) => {
                let expected = match header.kind {
                    Kind::Heartbeat => self.last_seq,
                    Kind::Deliver | Kind::Recover => self.last_seq + 1,
                };
                (header.seq > expected).then_some(Anomaly::Gap)
            }
        };
        if self.epoch != Some(header.epoch) {
            self.last_seq = 0;
        }
        self.epoch = Some(header.epoch);
        self.last_seq = self.last_seq.max(header.seq);
        self.last_heard_us = now_us;
        self.silent = false;
        anomaly
    }

    /// Called each time nothing arrived for the silence bound; true for the first period
    /// of a silence (the one worth a warning).
    pub fn silence(&mut self) -> bool {
        !std::mem::replace(&mut self.silent, true)
    }

    /// Heard from recently enough to be trusted.
    pub fn is_live(&self, now_us: i64, silence_us: i64) -> bool {
        self.epoch.is_some() && !self.silent && now_us - self.last_heard_us <= silence_us
    }
}

/// Silence periods in a row after which the SUB socket is replaced.
const RESUBSCRIBE_AFTER: u32 = 3;

/// A router stream as `/health` shows it.
pub struct RouterView {
    pub endpoint: String,
    pub state: Mutex<StreamState>,
}

/// Receives from `view.endpoint` until `shutdown`, delivering and reporting anomalies.
pub async fn run(edge: Arc<EdgeState>, view: Arc<RouterView>, shutdown: CancellationToken) {
    let silence = Duration::from_millis(edge.config.router_silence_ms);
    'connection: loop {
        let Some(mut sub) = connect(&view.endpoint, &shutdown).await else {
            return;
        };
        let mut quiet_timeouts = 0;
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = tokio::time::timeout(silence, sub.recv()) => received,
            };
            match received {
                Ok(Ok(message)) => {
                    quiet_timeouts = 0;
                    match Envelope::from_message(message) {
                        Ok(envelope) => handle(&edge, &view, envelope),
                        Err(e) => {
                            edge.metrics.invalid_envelopes.inc();
                            tracing::debug!(error = %e, "dropping a malformed envelope");
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(router = %view.endpoint, error = %e, "SUB receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => {
                    if view.state.lock().is_ok_and(|mut s| s.silence()) {
                        tracing::warn!(router = %view.endpoint, "router silent; checking streams against the store");
                    }
                    edge.report(Anomaly::Silence);
                    // zmq.rs backs its own reconnects off up to 30 s; after a long silence
                    // a fresh socket (our backoff, at most 2 s) gets the stream back sooner.
                    quiet_timeouts += 1;
                    if quiet_timeouts >= RESUBSCRIBE_AFTER {
                        tracing::info!(router = %view.endpoint, "re-subscribing with a fresh socket");
                        edge.metrics.resubscribes.inc();
                        continue 'connection;
                    }
                }
            }
        }
    }
}

/// Connects (waiting for the router to come up) and subscribes to everything: each edge
/// needs every envelope to see every sequence number.
async fn connect(endpoint: &str, shutdown: &CancellationToken) -> Option<SubSocket> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut options = SocketOptions::default();
        options.connect_timeout(Duration::from_secs(2));
        let mut sub = SubSocket::with_options(options);
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return None,
            connected = sub.connect(endpoint) => connected,
        };
        match connected {
            Ok(()) => match sub.subscribe("").await {
                Ok(()) => {
                    tracing::info!(router = %endpoint, "subscribed");
                    return Some(sub);
                }
                Err(e) => tracing::warn!(router = %endpoint, error = %e, "subscribe failed"),
            },
            Err(e) => tracing::debug!(router = %endpoint, error = %e, "connect failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn handle(edge: &EdgeState, view: &RouterView, envelope: Envelope) {
    let now = now_us();
    let anomaly = view
        .state
        .lock()
        .ok()
        .and_then(|mut s| s.observe(&envelope.header, now));
    edge.metrics
        .router_envelopes
        .with_label_values(&[envelope.header.kind.label()])
        .inc();
    if let Some(anomaly) = anomaly {
        if anomaly != Anomaly::FirstContact {
            tracing::warn!(router = %view.endpoint, anomaly = anomaly.label(), "possible loss; checking streams against the store");
        }
        edge.report(anomaly);
    }
    match envelope.header.kind {
        Kind::Heartbeat => {}
        Kind::Deliver => match envelope.delivery() {
            Ok(delivery) => edge.deliver_live(delivery, envelope.header.origin_us, now),
            Err(e) => {
                edge.metrics.invalid_envelopes.inc();
                tracing::debug!(error = %e, "dropping an envelope with a bad payload");
            }
        },
        Kind::Recover => match envelope.recover_request() {
            Ok(request) if request.streams.is_empty() => edge.recovery.check_all("recover", true),
            Ok(request) => request
                .streams
                .iter()
                .filter(|key| edge.hub.follows(key))
                .for_each(|key| edge.recovery.check_now(key)),
            Err(_) => edge.metrics.invalid_envelopes.inc(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: Kind, epoch: u64, seq: u64) -> Header {
        Header {
            kind,
            epoch,
            seq,
            origin_us: 0,
        }
    }

    #[test]
    fn an_ordered_stream_reveals_nothing_after_first_contact() {
        let mut s = StreamState::new(10);
        assert_eq!(
            s.observe(&header(Kind::Heartbeat, 7, 0), 20),
            Some(Anomaly::FirstContact)
        );
        assert_eq!(s.observe(&header(Kind::Deliver, 7, 1), 30), None);
        assert_eq!(s.observe(&header(Kind::Deliver, 7, 2), 40), None);
        assert_eq!(s.observe(&header(Kind::Heartbeat, 7, 2), 50), None);
        assert_eq!(s.observe(&header(Kind::Recover, 7, 3), 60), None);
        assert!(s.is_live(60, 100));
    }

    #[test]
    fn gaps_and_trailing_losses_are_reported() {
        let mut s = StreamState::new(0);
        s.observe(&header(Kind::Deliver, 7, 1), 10);
        assert_eq!(
            s.observe(&header(Kind::Deliver, 7, 4), 20),
            Some(Anomaly::Gap)
        );
        assert_eq!(
            s.observe(&header(Kind::Heartbeat, 7, 6), 30),
            Some(Anomaly::Gap)
        );
        assert_eq!(s.observe(&header(Kind::Deliver, 7, 7), 40), None);
    }

    #[test]
    fn a_restarted_router_is_a_new_epoch_even_when_it_counts_from_one() {
        let mut s = StreamState::new(0);
        s.observe(&header(Kind::Deliver, 7, 1), 10);
        s.observe(&header(Kind::Deliver, 7, 2), 20);
        assert_eq!(
            s.observe(&header(Kind::Deliver, 9, 1), 90),
            Some(Anomaly::NewEpoch)
        );
        assert_eq!(s.observe(&header(Kind::Deliver, 9, 2), 95), None);
    }

    #[test]
    fn a_silence_is_new_once_until_the_router_is_heard_again() {
        let mut s = StreamState::new(0);
        s.observe(&header(Kind::Heartbeat, 7, 0), 10);
        assert!(s.silence());
        assert!(!s.silence(), "the same silence goes on");
        assert!(!s.is_live(11, 100));
        assert_eq!(s.observe(&header(Kind::Heartbeat, 7, 0), 500), None);
        assert!(s.is_live(500, 100));
        assert!(s.silence(), "a new silence");
    }
}
