//! Channel operations (SPEC §4 Channels): configure history, publish (from HTTP or a client
//! socket), list history after a position, channel users. A publish to a channel with
//! history — or with an idempotency key — is stored first (its position assigned by the
//! store), then pushed; one to an ephemeral channel is only pushed (at most once).

use common::clock::now_us;
use common::ids::{AppId, ChannelName, UserId, new_message_id};
use common::message::{ChannelMessage, Delivery, JsonText, Origin};
use common::store::{ChannelInfo, History, Idempotency, Publication};
use common::stream::Position;

use super::{ServiceError, ServiceResult, Services, detached};

/// How long an idempotency key holds (SPEC §4: 24 h).
pub const IDEMPOTENCY_US: i64 = 24 * 3600 * 1_000_000;
/// Largest history size and ttl a channel may have.
pub const MAX_HISTORY_SIZE: u64 = 100_000;
pub const MAX_HISTORY_TTL: u64 = 30 * 24 * 3600;
/// Longest message ttl, seconds.
pub const MAX_MESSAGE_TTL: u64 = 30 * 24 * 3600;
/// Longest idempotency key and replaceId, bytes.
pub const MAX_KEY: usize = 256;
/// Most users `channel_users` lists.
pub const MAX_CHANNEL_USERS: usize = 10_000;

/// A publish to a channel.
#[derive(Debug, Clone)]
pub struct ChannelPublish {
    pub app: AppId,
    pub channel: ChannelName,
    pub data: JsonText,
    pub replace_id: Option<String>,
    /// Seconds until the message expires (it leaves history then).
    pub ttl: Option<u64>,
    pub idempotency_key: Option<String>,
    /// The client socket it came from, which does not get it back.
    pub origin: Option<Origin>,
}

/// What a publish answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub id: String,
    pub channel: ChannelName,
    /// The position when the channel keeps history.
    pub position: Option<Position>,
    pub created_us: i64,
    pub expires_us: Option<i64>,
    /// An idempotency key repeated: this is the first publish's result, not delivered again.
    pub repeat: bool,
}

/// A channel as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelView {
    pub name: ChannelName,
    pub history: History,
    pub head: Option<Position>,
    /// Sockets subscribed, cluster-wide.
    pub subscribers: u64,
}

/// Checks a history request against the bounds.
pub fn check_history(history: &History) -> ServiceResult<()> {
    if history.size.is_some_and(|s| s == 0 || s > MAX_HISTORY_SIZE) {
        return Err(ServiceError::bad_request(
            "history.size",
            format!("must be between 1 and {MAX_HISTORY_SIZE}"),
        ));
    }
    if history.ttl.is_some_and(|t| t == 0 || t > MAX_HISTORY_TTL) {
        return Err(ServiceError::bad_request(
            "history.ttl",
            format!("must be between 1 and {MAX_HISTORY_TTL} seconds"),
        ));
    }
    Ok(())
}

impl Services {
    /// Sets a channel's history.
    pub async fn configure_channel(
        &self,
        app: &AppId,
        channel: &ChannelName,
        history: History,
    ) -> ServiceResult<ChannelView> {
        check_history(&history)?;
        let info = self
            .stores
            .channels
            .configure_channel(app, channel, history, now_us())
            .await?;
        self.view(app, channel, info).await
    }

    /// A channel's configuration and subscribers (an unconfigured channel is ephemeral).
    pub async fn channel_view(
        &self,
        app: &AppId,
        channel: &ChannelName,
    ) -> ServiceResult<ChannelView> {
        let info = self
            .stores
            .channels
            .channel(app, channel)
            .await?
            .unwrap_or(ChannelInfo {
                history: History::default(),
                head: None,
            });
        self.view(app, channel, info).await
    }

    async fn view(
        &self,
        app: &AppId,
        channel: &ChannelName,
        info: ChannelInfo,
    ) -> ServiceResult<ChannelView> {
        let subscribers = self
            .stores
            .presence
            .channel_connections(app, channel, self.alive())
            .await?;
        Ok(ChannelView {
            name: channel.clone(),
            history: info.history,
            head: info.head,
            subscribers,
        })
    }

    /// Publishes to a channel: stored first when it keeps history or has an idempotency
    /// key, then pushed to every subscriber on every edge (unless it repeats a key).
    pub async fn publish_to_channel(&self, publish: ChannelPublish) -> ServiceResult<Published> {
        if publish.ttl.is_some_and(|t| t == 0 || t > MAX_MESSAGE_TTL) {
            return Err(ServiceError::bad_request(
                "ttl",
                format!("must be between 1 and {MAX_MESSAGE_TTL} seconds"),
            ));
        }
        for (field, value) in [
            ("replaceId", &publish.replace_id),
            ("idempotencyKey", &publish.idempotency_key),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.is_empty() || v.len() > MAX_KEY)
            {
                return Err(ServiceError::bad_request(
                    field,
                    format!("must be 1 to {MAX_KEY} bytes"),
                ));
            }
        }
        let created_us = now_us();
        let message = ChannelMessage {
            id: new_message_id(),
            app: publish.app.clone(),
            channel: publish.channel.clone(),
            data: publish.data,
            created_us,
            expires_us: publish
                .ttl
                .map(|t| created_us.saturating_add((t as i64).saturating_mul(1_000_000))),
            replace_id: publish.replace_id,
        };
        let idempotency = publish.idempotency_key.map(|key| Idempotency {
            key,
            expires_us: created_us.saturating_add(IDEMPOTENCY_US),
        });
        let services = self.clone();
        let origin = publish.origin;
        detached(async move {
            // One store call decides, in the same transaction, whether the channel keeps
            // history and stores the message if so: no read of its settings beforehand.
            let publication = services
                .stores
                .channels
                .publish_channel_message(&message, idempotency.as_ref())
                .await?;
            match publication {
                Publication::Fresh {
                    created_us,
                    position,
                } => {
                    let message = ChannelMessage {
                        created_us,
                        ..message
                    };
                    let published = Published {
                        id: message.id.clone(),
                        channel: message.channel.clone(),
                        position: position.clone(),
                        created_us,
                        expires_us: message.expires_us,
                        repeat: false,
                    };
                    let mut delivery = Delivery::channel_message(message, position);
                    delivery.origin = origin;
                    services.publisher.publish(&delivery).await;
                    Ok(published)
                }
                Publication::Repeat {
                    id,
                    created_us,
                    expires_us,
                    position,
                } => Ok(Published {
                    id,
                    channel: message.channel,
                    position,
                    created_us,
                    expires_us,
                    repeat: true,
                }),
            }
        })
        .await
    }

    /// History after offset `since`, oldest first: the messages and the offset to ask
    /// after next time.
    pub async fn channel_history(
        &self,
        app: &AppId,
        channel: &ChannelName,
        since: u64,
        limit: usize,
    ) -> ServiceResult<(Vec<(u64, ChannelMessage)>, u64)> {
        let items = self
            .stores
            .channels
            .channel_history(app, channel, since, limit, now_us())
            .await?;
        let next = items.last().map_or(since, |(offset, _)| *offset);
        Ok((items, next))
    }

    /// The newest `limit` kept messages, oldest first.
    pub async fn latest_channel_messages(
        &self,
        app: &AppId,
        channel: &ChannelName,
        limit: usize,
    ) -> ServiceResult<Vec<(u64, ChannelMessage)>> {
        let head = self
            .stores
            .channels
            .channel(app, channel)
            .await?
            .and_then(|info| info.head)
            .map_or(0, |head| head.offset);
        let since = head.saturating_sub(limit as u64);
        Ok(self.channel_history(app, channel, since, limit).await?.0)
    }

    /// Users with a socket subscribed to the channel, cluster-wide.
    pub async fn channel_users(
        &self,
        app: &AppId,
        channel: &ChannelName,
    ) -> ServiceResult<Vec<(UserId, u64)>> {
        Ok(self
            .stores
            .presence
            .channel_users(app, channel, self.alive(), MAX_CHANNEL_USERS)
            .await?)
    }
}
