//! Addressed messages (SPEC §4 Messages): send to 1..1000 recipients, read one, cancel it
//! while `PENDING`, list with filters newest first. "Persist, then publish, then answer":
//! each message is stored `PENDING` at its position of the recipient's inbox, then pushed
//! to the edges, which settle it (`DELIVERED`) before a socket gets it; a recipient who is
//! offline gets it when they connect, until it expires.

use common::clock::now_us;
use common::ids::{AppId, UserId, new_message_id};
use common::message::Delivery;
use common::store::{
    AddressedMessage, ListCursor, MessageBody, MessageFilter, MessageStatus, Transition, Via,
};

use super::{ServiceError, ServiceResult, Services};

/// Most recipients of one send.
pub const MAX_RECIPIENTS: usize = 1_000;
/// Longest a message may wait for its recipient, seconds.
pub const MAX_TTL: u64 = 30 * 24 * 3600;
/// Longest `foreignId` and `topic`, bytes.
pub const MAX_LABEL: usize = 256;

/// One recipient of a send: a user id as given, and the sender's `foreignId` for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub id: String,
    pub foreign_id: Option<String>,
}

/// What a send carries: its own content, or a stored template's.
#[derive(Debug, Clone)]
pub enum Content {
    Body(MessageBody),
    /// The template's id; its content becomes the message's `data`.
    Template(String),
}

/// A send to recipients.
#[derive(Debug, Clone)]
pub struct Send {
    pub app: AppId,
    pub recipients: Vec<Recipient>,
    pub content: Content,
    pub topic: Option<String>,
    /// When the message stops waiting, µs since the epoch.
    pub expires_us: Option<i64>,
}

/// What a send did: a message per accepted recipient, an error per refused one.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub items: Vec<AddressedMessage>,
    /// `(recipient as given, why)`.
    pub errors: Vec<(String, String)>,
}

impl Services {
    /// Stores one `PENDING` message per recipient (one transaction), then pushes each to
    /// the edges. A recipient that is not a valid user id is reported in `errors`; an
    /// empty, oversized or duplicated list, or a bad label, is a 400 and nothing is stored.
    pub async fn send_messages(&self, send: Send) -> ServiceResult<Sent> {
        if send.recipients.is_empty() {
            return Err(ServiceError::bad_request(
                "recipients",
                "must list at least one recipient",
            ));
        }
        if send.recipients.len() > MAX_RECIPIENTS {
            return Err(ServiceError::bad_request(
                "recipients",
                format!("lists more than {MAX_RECIPIENTS} recipients"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in send.recipients.iter().enumerate() {
            if !seen.insert(r.id.as_str()) {
                return Err(ServiceError::bad_request(
                    &format!("recipients[{i}]"),
                    format!("repeats recipient {:?}", r.id),
                ));
            }
            if r.foreign_id.as_ref().is_some_and(|f| f.len() > MAX_LABEL) {
                return Err(ServiceError::bad_request(
                    &format!("recipients[{i}].foreignId"),
                    format!("is longer than {MAX_LABEL} bytes"),
                ));
            }
        }
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
        let mut sent = Sent::default();
        for r in send.recipients {
            match UserId::parse(r.id.as_str()) {
                Ok(user) => sent.items.push(AddressedMessage {
                    id: new_message_id(),
                    app: send.app.clone(),
                    recipient: user,
                    foreign_id: r.foreign_id,
                    body: body.clone(),
                    topic: send.topic.clone(),
                    status: MessageStatus::Pending,
                    created_us: now,
                    expires_us,
                    delivered_us: None,
                    delivered_via: None,
                    cancelled_us: None,
                    expired_us: None,
                    global_message_id: None,
                    bucket: None,
                }),
                Err(e) => sent.errors.push((r.id, e.to_string())),
            }
        }
        if sent.items.is_empty() {
            return Ok(sent);
        }
        self.hand_over(&send.app, &sent.items).await?;
        Ok(sent)
    }

    /// Stores `messages` of `app` (all `PENDING`, one transaction), pushes each to the
    /// edges, and queues the Web Push fallback of those whose recipient has subscriptions.
    pub(crate) async fn hand_over(
        &self,
        app: &AppId,
        messages: &[AddressedMessage],
    ) -> ServiceResult<()> {
        let positions = self.stores.messages.create_messages(messages).await?;
        for (message, position) in messages.iter().zip(positions) {
            self.publisher
                .publish(&Delivery::addressed(message.clone(), position))
                .await;
        }
        self.queue_webpush(app, messages).await;
        Ok(())
    }

    /// The body and expiry `content` gives at `now`: its own, or a template's content as
    /// `data` with the template's `ttl` unless `expires_us` is set. 400 naming `template`
    /// when there is no such template; an `expires_us` not after `now` is a 400 too.
    pub async fn resolve_content(
        &self,
        app: &AppId,
        content: Content,
        expires_us: Option<i64>,
        now: i64,
    ) -> ServiceResult<(MessageBody, Option<i64>)> {
        if expires_us.is_some_and(|e| e <= now) {
            return Err(ServiceError::bad_request("expiresAt", "is in the past"));
        }
        match content {
            Content::Body(body) => Ok((body, expires_us)),
            Content::Template(id) => {
                let template =
                    self.stores
                        .templates
                        .template(app, &id)
                        .await?
                        .ok_or_else(|| {
                            ServiceError::bad_request("template", format!("no template {id:?}"))
                        })?;
                let from_ttl = template
                    .ttl
                    .map(|ttl| now.saturating_add((ttl as i64).saturating_mul(1_000_000)));
                Ok((MessageBody::Data(template.content), expires_us.or(from_ttl)))
            }
        }
    }

    /// Message `id` of `app`.
    pub async fn addressed_message(
        &self,
        app: &AppId,
        id: &str,
    ) -> ServiceResult<AddressedMessage> {
        self.stores
            .messages
            .addressed_message(app, id)
            .await?
            .ok_or_else(no_message)
    }

    /// Cancels message `id` if it is `PENDING` (it is never delivered afterwards); 409
    /// with its status otherwise.
    pub async fn cancel_message(&self, app: &AppId, id: &str) -> ServiceResult<AddressedMessage> {
        match self
            .stores
            .messages
            .transition_message(app, id, MessageStatus::Cancelled, now_us())
            .await?
        {
            Some(Transition::Done(m)) => Ok(m),
            Some(Transition::Refused(m)) => Err(ServiceError::Conflict(format!(
                "the message is {}, not PENDING",
                m.status.as_str()
            ))),
            None => Err(no_message()),
        }
    }

    /// Marks messages `ids` of `app` `DELIVERED` via a socket as an edge hands them to
    /// sockets (one store transaction, their `delivered` webhook events in it). Per id, in
    /// order: whether it may be written — `DELIVERED` to a socket now (by this call or
    /// before) — or must be withheld (cancelled, expired, delivered by Web Push, unknown).
    /// Never `DELIVERED` twice, never after a cancel, never on both channels.
    pub async fn deliver_messages(&self, app: &AppId, ids: &[String]) -> ServiceResult<Vec<bool>> {
        let settled = self
            .stores
            .messages
            .deliver_messages(app, ids, Via::Websocket, now_us())
            .await?;
        Ok(settled
            .into_iter()
            .map(|outcome| match outcome {
                Some(Transition::Done(_)) => true,
                Some(Transition::Refused(m)) => delivered_to_a_socket(&m),
                None => false,
            })
            .collect())
    }

    /// Whether message `id` of `app` may be written to an ack-mode socket, which marks
    /// nothing until the client's `ack`: `PENDING` and unexpired, or already `DELIVERED`.
    pub async fn deliverable(&self, app: &AppId, id: &str) -> ServiceResult<bool> {
        let at = now_us();
        let found = self.stores.messages.addressed_message(app, id).await?;
        Ok(found.is_some_and(|m| match m.status {
            MessageStatus::Pending => m.expires_us.is_none_or(|e| e > at),
            MessageStatus::Delivered => delivered_to_a_socket(&m),
            MessageStatus::Cancelled | MessageStatus::Expired => false,
        }))
    }

    /// `user` acknowledges message `id` of `app` (ack mode, SPEC §6): `PENDING →
    /// DELIVERED`; a repeat, or a message already delivered, is fine.
    ///
    /// # Errors
    /// `NotFound` when it is not a message to `user`; `Conflict` naming the status when it
    /// was cancelled or expired (an unacknowledged message past its expiry counts as
    /// expired).
    pub async fn acknowledge_message(
        &self,
        app: &AppId,
        user: &UserId,
        id: &str,
    ) -> ServiceResult<()> {
        let messages = &self.stores.messages;
        let found = messages.addressed_message(app, id).await?;
        if found.is_none_or(|m| &m.recipient != user) {
            return Err(no_message());
        }
        let refused = |status: MessageStatus| {
            ServiceError::Conflict(format!("the message is {}", status.as_str()))
        };
        match messages
            .transition_message(app, id, MessageStatus::Delivered, now_us())
            .await?
        {
            Some(Transition::Done(_)) => Ok(()),
            Some(Transition::Refused(m)) => match m.status {
                MessageStatus::Delivered => Ok(()),
                // Still PENDING but refused: its expiry has passed.
                MessageStatus::Pending => Err(refused(MessageStatus::Expired)),
                status => Err(refused(status)),
            },
            None => Err(no_message()),
        }
    }

    /// Messages matching `filter`, newest first, after `cursor`, at most `limit`; and the
    /// cursor of the next page when this one is full.
    pub async fn list_messages(
        &self,
        app: &AppId,
        filter: &MessageFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> ServiceResult<(Vec<AddressedMessage>, Option<ListCursor>)> {
        let items = self
            .stores
            .messages
            .list_messages(app, filter, cursor, limit)
            .await?;
        let next = ListCursor::next_page(&items, limit, |m| (m.created_us, &m.id));
        Ok((items, next))
    }
}

/// Checks that `url`, the value of `field`, is an absolute http(s) URL of sane length.
pub fn url_field(field: &str, url: &str) -> ServiceResult<()> {
    const MAX_URL: usize = 2_048;
    if url.len() > MAX_URL {
        return Err(ServiceError::bad_request(
            field,
            format!("is longer than {MAX_URL} bytes"),
        ));
    }
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err(ServiceError::bad_request(field, "must be an http(s) URL")),
    }
}

/// Whether `m` is `DELIVERED` over a socket (so another socket of its user may have it
/// too), not by Web Push.
fn delivered_to_a_socket(m: &AddressedMessage) -> bool {
    m.status == MessageStatus::Delivered && m.delivered_via != Some(Via::Webpush)
}

fn no_message() -> ServiceError {
    ServiceError::not_found("message", "No such message.")
}
