//! The ZeroMQ envelope: the only place that knows the frame layout between processes.
//!
//! An envelope is three frames:
//! 1. routing key (UTF-8), first so SUB prefix filters can act on it;
//! 2. a fixed 32-byte big-endian header:
//!    `version u8 | kind u8 | reserved u16 | epoch u64 | seq u64 | origin_us i64 | reserved u32`;
//! 3. the payload (JSON; its schema depends on `kind`).
//!
//! API processes send envelopes with `epoch = seq = 0`; the router stamps its epoch (random
//! per router start) and a per-epoch sequence number that increases by one per forwarded
//! envelope. Heartbeats carry the last sequence number without taking a new one, so an edge
//! can tell a quiet router from a lossy one. The router's sequence detects loss on the
//! router link; order and de-duplication within one stream come from the stream position
//! a `Deliver` payload carries (`crate::stream`). A new `VERSION` is a new layout or payload
//! schema: receivers drop (and count) envelopes of versions they do not know.
//!
//! Version history: 1 — deliveries addressed by token, recovery by time window; 2 —
//! deliveries carry their stream and position, `Recover` names streams.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use zeromq::ZmqMessage;

use crate::message::Delivery;
use crate::stream::StreamKey;

/// Layout version of the header below and of the payload schemas.
pub const VERSION: u8 = 2;
/// Size of the header frame.
pub const HEADER_LEN: usize = 32;
/// Routing key of router heartbeats and API keep-alives.
pub const HEARTBEAT_KEY: &str = "_hb.";
/// Routing key of control envelopes.
pub const CONTROL_KEY: &str = "_ctl.";

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A `Delivery` for some sockets.
    Deliver = 1,
    /// Liveness: from an API to a router (dropped there), from a router to edges.
    Heartbeat = 2,
    /// "Deliveries on these streams may be lost: re-read them from the store" (`Recover`).
    Recover = 3,
}

impl Kind {
    /// The metric label of this kind.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Deliver => "deliver",
            Kind::Heartbeat => "heartbeat",
            Kind::Recover => "recover",
        }
    }
}

impl TryFrom<u8> for Kind {
    type Error = WireError;

    fn try_from(value: u8) -> Result<Self, WireError> {
        match value {
            1 => Ok(Kind::Deliver),
            2 => Ok(Kind::Heartbeat),
            3 => Ok(Kind::Recover),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

/// The fixed header frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// The stamping router's epoch; 0 until stamped.
    pub epoch: u64,
    /// Per-epoch sequence number; 0 until stamped.
    pub seq: u64,
    /// When the API published it (µs since epoch), for latency metrics.
    pub origin_us: i64,
}

/// Payload of a `Kind::Recover` envelope: an API dropped deliveries before any router took
/// them (they are stored), and edges should check these streams against the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recover {
    /// The streams that lost deliveries; empty means "possibly any stream".
    pub streams: Vec<StreamKey>,
}

/// Most streams a `Recover` names; past this it names none (= every stream).
pub const MAX_RECOVER_STREAMS: usize = 256;

/// Why bytes from the wire were not a valid envelope.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("expected 3 frames, got {0}")]
    FrameCount(usize),
    #[error("header frame is {0} bytes, expected {HEADER_LEN}")]
    HeaderLength(usize),
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    #[error("unknown envelope kind {0}")]
    UnknownKind(u8),
    #[error("routing key is not UTF-8")]
    RoutingKey,
    #[error("payload does not match kind {0:?}: {1}")]
    Payload(Kind, serde_json::Error),
}

/// One message between processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub routing_key: String,
    pub header: Header,
    pub payload: Bytes,
}

impl Header {
    fn new(kind: Kind, origin_us: i64) -> Header {
        Header {
            kind,
            epoch: 0,
            seq: 0,
            origin_us,
        }
    }

    /// The 32-byte frame.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(HEADER_LEN);
        buf.put_u8(VERSION);
        buf.put_u8(self.kind as u8);
        buf.put_u16(0);
        buf.put_u64(self.epoch);
        buf.put_u64(self.seq);
        buf.put_i64(self.origin_us);
        buf.put_u32(0);
        buf.freeze()
    }

    /// Parses a header frame, checking length, version and kind.
    pub fn decode(frame: &[u8]) -> Result<Header, WireError> {
        let bytes: &[u8; HEADER_LEN] = frame
            .try_into()
            .map_err(|_| WireError::HeaderLength(frame.len()))?;
        if bytes[0] != VERSION {
            return Err(WireError::UnknownVersion(bytes[0]));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            b
        };
        Ok(Header {
            kind: Kind::try_from(bytes[1])?,
            epoch: u64::from_be_bytes(word(4)),
            seq: u64::from_be_bytes(word(12)),
            origin_us: i64::from_be_bytes(word(20)),
        })
    }
}

impl Envelope {
    /// An unstamped envelope carrying `delivery`.
    pub fn deliver(delivery: &Delivery, origin_us: i64) -> Envelope {
        Envelope {
            routing_key: delivery.routing_key(),
            header: Header::new(Kind::Deliver, origin_us),
            payload: Bytes::from(serde_json::to_vec(delivery).expect("a Delivery serializes")),
        }
    }

    /// A heartbeat (empty payload).
    pub fn heartbeat(origin_us: i64) -> Envelope {
        Envelope {
            routing_key: HEARTBEAT_KEY.into(),
            header: Header::new(Kind::Heartbeat, origin_us),
            payload: Bytes::new(),
        }
    }

    /// A recovery request for `streams` (empty: every stream).
    pub fn recover(streams: Vec<StreamKey>, origin_us: i64) -> Envelope {
        let payload = serde_json::to_vec(&Recover { streams }).expect("Recover serializes");
        Envelope {
            routing_key: CONTROL_KEY.into(),
            header: Header::new(Kind::Recover, origin_us),
            payload: Bytes::from(payload),
        }
    }

    /// The three ZeroMQ frames.
    pub fn to_message(&self) -> ZmqMessage {
        let mut message = ZmqMessage::from(Bytes::from(self.routing_key.clone().into_bytes()));
        message.push_back(self.header.encode());
        message.push_back(self.payload.clone());
        message
    }

    /// Parses three ZeroMQ frames.
    pub fn from_message(message: ZmqMessage) -> Result<Envelope, WireError> {
        let frames = message.into_vec();
        let [key, header, payload]: [Bytes; 3] = frames
            .try_into()
            .map_err(|frames: Vec<Bytes>| WireError::FrameCount(frames.len()))?;
        let routing_key = String::from_utf8(key.to_vec()).map_err(|_| WireError::RoutingKey)?;
        Ok(Envelope {
            routing_key,
            header: Header::decode(&header)?,
            payload,
        })
    }

    /// The payload of a `Deliver` envelope.
    pub fn delivery(&self) -> Result<Delivery, WireError> {
        serde_json::from_slice(&self.payload).map_err(|e| WireError::Payload(self.header.kind, e))
    }

    /// The payload of a `Recover` envelope.
    pub fn recover_request(&self) -> Result<Recover, WireError> {
        serde_json::from_slice(&self.payload).map_err(|e| WireError::Payload(self.header.kind, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{QueueBody, QueueMessage};
    use crate::stream::Position;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Deliver),
            Just(Kind::Heartbeat),
            Just(Kind::Recover)
        ]
    }

    proptest! {
        #[test]
        fn envelopes_round_trip(
            key in "[ -~]{0,80}",
            kind in kind(),
            epoch: u64,
            seq: u64,
            origin_us: i64,
            payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let envelope = Envelope {
                routing_key: key,
                header: Header { kind, epoch, seq, origin_us },
                payload: Bytes::from(payload),
            };
            let decoded = Envelope::from_message(envelope.to_message()).unwrap();
            prop_assert_eq!(decoded, envelope);
        }

        #[test]
        fn arbitrary_header_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Header::decode(&bytes);
        }
    }

    #[test]
    fn a_delivery_survives_the_wire() {
        let message = QueueMessage {
            key: "k".into(),
            queue: "q".into(),
            token: "t".into(),
            created_us: 5,
            body: QueueBody {
                body: Some("b".into()),
                ..QueueBody::default()
            },
        };
        let delivery = Delivery::queue_message(message, Position::start("e"));
        let envelope = Envelope::deliver(&delivery, 7);
        let back = Envelope::from_message(envelope.to_message()).unwrap();
        assert_eq!(back.routing_key, "t/t|");
        assert_eq!(back.header.kind, Kind::Deliver);
        assert_eq!(back.delivery().unwrap(), delivery);
        let streams = vec![StreamKey::mozilla_token("t")];
        let recover = Envelope::recover(streams.clone(), 1);
        assert_eq!(recover.recover_request().unwrap(), Recover { streams });
    }

    #[test]
    fn rejects_malformed_envelopes() {
        let mut header = Envelope::heartbeat(0).header.encode().to_vec();
        let frames = |h: Vec<u8>| {
            let mut m = ZmqMessage::from(Bytes::from_static(b"k"));
            m.push_back(Bytes::from(h));
            m.push_back(Bytes::new());
            m
        };
        assert!(matches!(
            Envelope::from_message(ZmqMessage::from(Bytes::from_static(b"k"))),
            Err(WireError::FrameCount(1))
        ));
        assert!(matches!(
            Envelope::from_message(frames(vec![1, 2, 3])),
            Err(WireError::HeaderLength(3))
        ));
        header[0] = 9;
        assert!(matches!(
            Envelope::from_message(frames(header.clone())),
            Err(WireError::UnknownVersion(9))
        ));
        header[0] = VERSION;
        header[1] = 77;
        assert!(matches!(
            Envelope::from_message(frames(header)),
            Err(WireError::UnknownKind(77))
        ));
        let garbage = Envelope {
            payload: Bytes::from_static(b"{"),
            ..Envelope::heartbeat(0)
        };
        assert!(garbage.delivery().is_err());
    }
}
