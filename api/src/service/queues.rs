//! Mozilla push operations (SPEC §3): tokens, per-site queues, messages and read marks. A
//! message is stored at the next position of its token's stream, then pushed.

use std::sync::Mutex;

use common::clock::now_us;
use common::message::{Delivery, QueueBody, QueueMessage};
use common::store::{After, Queue, QueueScope};
use common::token::{is_hex, mozilla_token_id, new_message_key, new_mozilla_token, new_queue_id};

use super::{ServiceError, ServiceResult, Services, detached};

/// What a queue lists: its own messages, or for a token's own queue all of the token's.
pub fn scope(queue: &Queue) -> QueueScope<'_> {
    match queue.domain {
        Some(_) => QueueScope::Queue(&queue.id),
        None => QueueScope::Token(&queue.token),
    }
}

/// Most queues `QueueCache` holds; the least recently posted to leaves first.
const CACHED_QUEUES: usize = 65_536;

/// Queues as the message path first read them. A queue's owner and domain never change
/// (ids are random and never reused), so a post needs no store read for them after the
/// first; `read_us` does change and is not to be read from here. A queue deleted since
/// is still refused: the store's append checks it in the same transaction.
pub struct QueueCache(Mutex<hashlink::LruCache<String, Queue>>);

impl Default for QueueCache {
    fn default() -> QueueCache {
        QueueCache(Mutex::new(hashlink::LruCache::new(CACHED_QUEUES)))
    }
}

impl QueueCache {
    fn get(&self, id: &str) -> Option<Queue> {
        self.0.lock().ok()?.get(id).cloned()
    }

    fn put(&self, queue: &Queue) {
        if let Ok(mut cache) = self.0.lock() {
            cache.insert(queue.id.clone(), queue.clone());
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut cache) = self.0.lock() {
            cache.remove(id);
        }
    }
}

fn unknown_token() -> ServiceError {
    ServiceError::bad_request("token", "Unknown token.")
}

fn no_queue() -> ServiceError {
    ServiceError::not_found("queue", "Not Found.")
}

impl Services {
    /// A new token and its own queue: (token, own queue id).
    pub async fn create_mozilla_token(&self) -> ServiceResult<(String, String)> {
        let token = new_mozilla_token();
        let id = mozilla_token_id(&token).expect("a fresh token has the token shape");
        let own_queue = new_queue_id();
        self.stores
            .queues
            .create_token(&id, &own_queue, now_us())
            .await?;
        Ok((token, own_queue))
    }

    /// The token's queue for `domain` (the same one when asked again).
    pub async fn create_queue(&self, token: &str, domain: &str) -> ServiceResult<Queue> {
        let id = mozilla_token_id(token).ok_or_else(unknown_token)?;
        self.stores
            .queues
            .create_queue(&id, domain, &new_queue_id(), now_us())
            .await?
            .ok_or_else(unknown_token)
    }

    /// The token's domain queues.
    pub async fn domain_queues(&self, token: &str) -> ServiceResult<Vec<Queue>> {
        let id = mozilla_token_id(token).ok_or_else(unknown_token)?;
        if !self.stores.queues.token_exists(&id).await? {
            return Err(unknown_token());
        }
        Ok(self.stores.queues.domain_queues(&id).await?)
    }

    /// The queue `id`.
    pub async fn queue(&self, id: &str) -> ServiceResult<Queue> {
        if !is_hex(id, 32) {
            return Err(no_queue());
        }
        self.stores.queues.queue(id).await?.ok_or_else(no_queue)
    }

    /// The queue `id` for a post (a message or a read mark), from `QueueCache` after the
    /// first read: its `read_us` may be stale, which a post never reads.
    pub async fn posting_queue(&self, id: &str) -> ServiceResult<Queue> {
        if let Some(queue) = self.queue_cache.get(id) {
            return Ok(queue);
        }
        let queue = self.queue(id).await?;
        self.queue_cache.put(&queue);
        Ok(queue)
    }

    /// The queue `id`, provided `token` owns it (anyone else: not found, which does not
    /// reveal whether the queue exists).
    pub async fn owned_queue(&self, id: &str, token: &str) -> ServiceResult<Queue> {
        let owner = mozilla_token_id(token).ok_or_else(no_queue)?;
        let queue = self.queue(id).await?;
        if queue.token != owner {
            return Err(no_queue());
        }
        Ok(queue)
    }

    /// Stores `body` as a new message of `queue` at the next position of the token's
    /// stream, then pushes it: (key, creation time).
    pub async fn append_queue_message(
        &self,
        queue: &Queue,
        body: QueueBody,
    ) -> ServiceResult<(String, i64)> {
        let message = QueueMessage {
            key: new_message_key(),
            queue: queue.id.clone(),
            token: queue.token.clone(),
            created_us: now_us(),
            body,
        };
        let services = self.clone();
        detached(async move {
            let appended = services
                .stores
                .queues
                .add_queue_message(&message)
                .await?
                .ok_or_else(no_queue)?;
            let message = QueueMessage {
                created_us: appended.created_us,
                ..message
            };
            let key = message.key.clone();
            let delivery = Delivery::queue_message(message, appended.position);
            services.publisher.publish(&delivery).await;
            Ok((key, appended.created_us))
        })
        .await
    }

    /// A read mark for message `key` in the token's own `queue`: stored and pushed like
    /// any message, so every device of the token — online now or later — learns of it.
    pub async fn mark_read(&self, queue: &Queue, key: &str) -> ServiceResult<(String, i64)> {
        if queue.domain.is_some() {
            return Err(ServiceError::bad_request(
                "action",
                "`action=read` is only accepted on the token's own queue.",
            ));
        }
        let read = self.stores.queues.queue_message(scope(queue), key).await?;
        if read.is_none_or(|m| m.body.read.is_some()) {
            return Err(ServiceError::not_found(
                "key",
                "No such message for this token.",
            ));
        }
        self.append_queue_message(queue, QueueBody::read_mark(key))
            .await
    }

    /// Moves the queue's read timestamp forward; the value now stored.
    pub async fn advance_read_timestamp(&self, queue: &Queue, read_us: i64) -> ServiceResult<i64> {
        self.stores
            .queues
            .advance_read_timestamp(&queue.id, read_us)
            .await?
            .ok_or_else(no_queue)
    }

    /// Where `since=<key>` points: just after that message of the queue.
    pub async fn after_message(&self, queue: &Queue, key: &str) -> ServiceResult<After> {
        match self.stores.queues.queue_message(scope(queue), key).await? {
            Some(m) => Ok(After::Message {
                created_us: m.created_us,
                key: m.key,
            }),
            None => Err(ServiceError::bad_request(
                "since",
                "`since` is not the key of a message in this queue.",
            )),
        }
    }

    /// The queue's messages after `after` (oldest first, replaceId-collapsed).
    pub async fn queue_messages(
        &self,
        queue: &Queue,
        after: &After,
        limit: usize,
    ) -> ServiceResult<Vec<QueueMessage>> {
        Ok(self
            .stores
            .queues
            .list_queue_messages(scope(queue), after, limit)
            .await?)
    }

    /// Deletes a domain queue owned by `token`.
    pub async fn delete_queue(&self, queue: &Queue, token: &str) -> ServiceResult<()> {
        if mozilla_token_id(token).as_deref() != Some(queue.token.as_str()) {
            return Err(no_queue());
        }
        if queue.domain.is_none() {
            return Err(ServiceError::bad_request(
                "queue",
                "A token's own queue cannot be deleted.",
            ));
        }
        self.queue_cache.forget(&queue.id);
        if !self
            .stores
            .queues
            .delete_queue(&queue.token, &queue.id)
            .await?
        {
            return Err(no_queue());
        }
        Ok(())
    }
}
