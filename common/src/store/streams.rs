//! Reading any resumable stream by position (SPEC §7): the `Streams` concern, used by edge
//! recovery and by `subscribe` with `since`. A backend dispatches on the stream's kind
//! (`crate::stream::StreamKind`) to wherever that kind's entries live.

use async_trait::async_trait;

use super::StoreResult;
use crate::message::Delivery;
use crate::stream::{Position, StreamKey};

/// Most stream keys one `stream_heads` call takes.
pub const MAX_HEADS: usize = 256;

/// Positions and entries of streams.
#[async_trait]
pub trait Streams: Send + Sync + 'static {
    /// The current position (epoch, last offset) of each of `streams` that exists; streams
    /// that do not exist (or keep no history) are left out. At most `MAX_HEADS` keys.
    async fn stream_heads(&self, streams: &[StreamKey]) -> StoreResult<Vec<(StreamKey, Position)>>;
    /// What `stream` holds strictly after `after` in its current epoch, by offset, at most
    /// `limit` entries, as the deliveries to replay. Offsets may have holes (deleted or
    /// expired entries); an unknown stream reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamKey,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<Delivery>>;
}
