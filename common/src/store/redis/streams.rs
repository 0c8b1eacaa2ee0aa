//! The `Streams` concern on Redis: heads from each stream's `stream:<S>` hash (while
//! `active`), replay from wherever the stream's kind keeps its entries: channel history
//! (`channels.rs`), Mozilla tokens' messages (`queues.rs`) and users' inboxes
//! (`messages.rs`).

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
        let meta = self.key(format_args!("stream:{stream}"));
        let epoch = || async {
            let v: (Option<String>, Option<String>) = self
                .query(redis::cmd("HMGET").arg(&meta).arg("epoch").arg("active"))
                .await?;
            StoreResult::Ok(v.0.filter(|_| v.1.as_deref() == Some("1")))
        };
        let at = |epoch: &str, offset| Position {
            epoch: epoch.to_owned(),
            offset,
        };
        match stream.kind() {
            Some(StreamKind::Channel { .. }) => {
                let Some(epoch) = epoch().await? else {
                    return Ok(Vec::new());
                };
                let entries = self
                    .channel_entries(stream, after, limit, now_us, None)
                    .await?;
                Ok(entries
                    .into_iter()
                    .map(|(offset, m)| Delivery::channel_message(m, Some(at(&epoch, offset))))
                    .collect())
            }
            Some(StreamKind::MozillaToken(token)) => {
                let Some(epoch) = epoch().await? else {
                    return Ok(Vec::new());
                };
                let entries = self.token_entries(token, after, limit).await?;
                Ok(entries
                    .into_iter()
                    .map(|(m, offset)| Delivery::queue_message(m, at(&epoch, offset)))
                    .collect())
            }
            Some(StreamKind::Inbox { app, user }) => {
                let Some(epoch) = epoch().await? else {
                    return Ok(Vec::new());
                };
                let entries = self.inbox_entries(app, user, after, limit).await?;
                Ok(entries
                    .into_iter()
                    .map(|(offset, m)| Delivery::addressed(m, at(&epoch, offset)))
                    .collect())
            }
            _ => Ok(Vec::new()),
        }
    }
}
