//! Broadcasts (SPEC §4 Broadcasts; Socrate's `pushGlobalMessage`): send to every connected
//! recipient of the app, or only those whose token carries the topic; list them.
//!
//! A broadcast is stored, then pushed to every edge on the app's broadcast stream. Each
//! edge turns it into one addressed message per matching user connected there
//! (`reach_broadcast`), carrying `globalMessageId`, and those go the way of every addressed
//! message — stored `PENDING` at the recipient's inbox position, settled `DELIVERED` as a
//! socket gets them, with their webhook events. A recipient's message id is derived from
//! the broadcast and the user, so a user connected to two edges gets one message.
//! Reach is live, as for a channel without history: a recipient who connects later, or an
//! edge that misses the broadcast while a router fails, does not get it.

use common::clock::now_us;
use common::ids::{AppId, UserId, new_message_id};
use common::message::Delivery;
use common::store::{AddressedMessage, BroadcastFilter, GlobalMessage, ListCursor, MessageStatus};
use sha2::{Digest, Sha256};

use super::messages::{Content, MAX_LABEL};
use super::{ServiceResult, Services};
use crate::service::ServiceError;

/// Most recipients one edge creates messages for in one store transaction.
const REACH_BATCH: usize = 1_000;

/// A broadcast as a caller sends it.
#[derive(Debug, Clone)]
pub struct BroadcastSend {
    pub app: AppId,
    pub content: Content,
    pub topic: Option<String>,
    /// µs since the epoch.
    pub expires_us: Option<i64>,
}

/// The id of `user`'s message of broadcast `global`: 32 hex characters of
/// SHA-256(`global` "/" `user`).
pub fn reached_message_id(global: &str, user: &UserId) -> String {
    let digest = Sha256::new()
        .chain_update(global.as_bytes())
        .chain_update(b"/")
        .chain_update(user.as_str().as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Services {
    /// Stores a broadcast, then pushes it to the edges; 400 naming the field for a bad
    /// topic, an expiry in the past or an unknown template.
    pub async fn broadcast(&self, send: BroadcastSend) -> ServiceResult<GlobalMessage> {
        if send.topic.as_ref().is_some_and(|t| t.len() > MAX_LABEL) {
            return Err(ServiceError::bad_request(
                "topic",
                format!("is longer than {MAX_LABEL} bytes"),
            ));
        }
        let now = now_us();
        let (body, expires_us) = self
            .resolve_content(&send.app, send.content, send.expires_us, now)
            .await?;
        let message = GlobalMessage {
            id: new_message_id(),
            app: send.app,
            body,
            topic: send.topic,
            created_us: now,
            expires_us,
        };
        self.stores.broadcasts.create_broadcast(&message).await?;
        self.publisher
            .publish(&Delivery::broadcast(message.clone()))
            .await;
        Ok(message)
    }

    /// Broadcasts matching `filter`, newest first, after `cursor`, at most `limit`; and
    /// the cursor of the next page when this one is full.
    pub async fn list_broadcasts(
        &self,
        app: &AppId,
        filter: &BroadcastFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> ServiceResult<(Vec<GlobalMessage>, Option<ListCursor>)> {
        let items = self
            .stores
            .broadcasts
            .list_broadcasts(app, filter, cursor, limit)
            .await?;
        let next = ListCursor::next_page(&items, limit, |m| (m.created_us, &m.id));
        Ok((items, next))
    }

    /// An edge's part of broadcast `global`: one `PENDING` message to each of `users`
    /// (connected there) that has none yet, pushed to their inboxes. How many it created.
    pub async fn reach_broadcast(
        &self,
        global: &GlobalMessage,
        users: &[UserId],
    ) -> ServiceResult<usize> {
        let now = now_us();
        if global.expires_us.is_some_and(|e| e <= now) {
            return Ok(0);
        }
        let mut created = 0;
        for chunk in users.chunks(REACH_BATCH) {
            let messages: Vec<AddressedMessage> = chunk
                .iter()
                .map(|user| AddressedMessage {
                    id: reached_message_id(&global.id, user),
                    app: global.app.clone(),
                    recipient: user.clone(),
                    foreign_id: None,
                    body: global.body.clone(),
                    topic: global.topic.clone(),
                    status: MessageStatus::Pending,
                    created_us: now,
                    expires_us: global.expires_us,
                    delivered_us: None,
                    delivered_via: None,
                    cancelled_us: None,
                    expired_us: None,
                    global_message_id: Some(global.id.clone()),
                    bucket: None,
                })
                .collect();
            let positions = self
                .stores
                .messages
                .create_missing_messages(&messages)
                .await?;
            for (message, position) in messages.into_iter().zip(positions) {
                if let Some(position) = position {
                    created += 1;
                    self.publisher
                        .publish(&Delivery::addressed(message, position))
                        .await;
                }
            }
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reached_message_id_is_stable_and_distinct_per_user() {
        let a = UserId::parse("alice").unwrap();
        let b = UserId::parse("bob").unwrap();
        let id = reached_message_id("g1", &a);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, reached_message_id("g1", &a));
        assert_ne!(id, reached_message_id("g1", &b));
        assert_ne!(id, reached_message_id("g2", &a));
    }
}
