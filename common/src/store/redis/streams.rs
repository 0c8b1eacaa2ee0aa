//! The `Streams` concern on Redis: heads from each stream's `stream:<S>` hash (while
//! `active`), replay from wherever the stream's kind keeps its entries. Channel streams
//! are here; Mozilla token and inbox streams come with their concerns.

use async_trait::async_trait;

use super::RedisStore;
use crate::message::Delivery;
use crate::store::{MAX_HEADS, StoreError, StoreResult, Streams};
use crate::stream::{Position, StreamKey, StreamKind};

#[async_trait]
impl Streams for RedisStore {
    async fn stream_heads(&self, streams: &[StreamKey]) -> StoreResult<Vec<(StreamKey, Position)>> {
        let streams = &streams[..streams.len().min(MAX_HEADS)];
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for stream in streams {
            pipe.cmd("HMGET")
                .arg(self.key(format_args!("stream:{stream}")))
                .arg("epoch")
                .arg("head")
                .arg("active");
        }
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> = self.pipe(&pipe).await?;
        let mut heads = Vec::new();
        for (stream, row) in streams.iter().zip(rows) {
            if let (Some(epoch), Some(head), Some("1")) = (row.0, row.1, row.2.as_deref()) {
                let offset = head
                    .parse()
                    .map_err(|_| StoreError::Internal(format!("stream head: {head:?}")))?;
                heads.push((stream.clone(), Position { epoch, offset }));
            }
        }
        Ok(heads)
    }

    async fn read_stream(
        &self,
        stream: &StreamKey,
        after: u64,
        limit: usize,
        now_us: i64,
    ) -> StoreResult<Vec<Delivery>> {
        match stream.kind() {
            Some(StreamKind::Channel { .. }) => {
                let meta = self.key(format_args!("stream:{stream}"));
                let epoch: Option<String> = self
                    .query(redis::cmd("HGET").arg(&meta).arg("epoch"))
                    .await?;
                let Some(epoch) = epoch else {
                    return Ok(Vec::new());
                };
                let entries = self
                    .channel_entries(stream, after, limit, now_us, None)
                    .await?;
                Ok(entries
                    .into_iter()
                    .map(|(offset, message)| {
                        let position = Position {
                            epoch: epoch.clone(),
                            offset,
                        };
                        Delivery::channel_message(message, Some(position))
                    })
                    .collect())
            }
            Some(StreamKind::MozillaToken(_) | StreamKind::Inbox { .. }) => Err(
                StoreError::Internal(format!("{stream}: not yet kept in Redis")),
            ),
            _ => Ok(Vec::new()),
        }
    }
}
