//! Web Push for Herald users (SPEC §4 Users, §5 PushPushGo; docs/webpush.md): each app's
//! VAPID public key (made on first use, one per app for the whole cluster), the users'
//! subscriptions, and the offline fallback — an addressed message whose recipient holds a
//! subscription is queued for the Web Push sender (`crate::pusher`), which sends it only
//! if it is still `PENDING` and the recipient still has no live socket when it comes due.

use common::clock::now_us;
use common::ids::{AppId, UserId, new_message_id};
use common::store::webpush::MAX_SUBSCRIPTIONS;
use common::store::{Added, AddressedMessage, PushJob, PushSubscription};

use super::messages::url_field;
use super::{ServiceError, ServiceResult, Services};
use crate::webpush::{SubscriptionKeys, VapidKey, WebPushError};

/// A subscription as a browser gives it (`PushSubscription.toJSON()`).
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub endpoint: String,
    /// base64url (padded or not) of the browser's P-256 public key.
    pub p256dh: String,
    /// base64url of its 16-byte authentication secret.
    pub auth: String,
}

impl Services {
    /// The VAPID key of `app`: the stored one, or a new one that becomes the stored one
    /// (racing processes agree through the store). Cached for the life of the process.
    pub async fn vapid_key(&self, app: &AppId) -> ServiceResult<VapidKey> {
        let cached = self
            .vapid_keys
            .lock()
            .ok()
            .and_then(|k| k.get(app).cloned());
        if let Some(key) = cached {
            return Ok(key);
        }
        let candidate = VapidKey::generate();
        let (private, public) = self
            .stores
            .webpush
            .vapid_key(
                app,
                (candidate.private_key(), candidate.public_key().to_owned()),
            )
            .await?;
        let key = VapidKey::from_base64(&private, &public).map_err(|e| {
            tracing::error!(%app, error = %e, "the stored VAPID key does not load");
            ServiceError::Internal("Internal error.".into())
        })?;
        if let Ok(mut keys) = self.vapid_keys.lock() {
            keys.insert(app.clone(), key.clone());
        }
        Ok(key)
    }

    /// Registers a subscription for `user` (the same endpoint again updates its keys and
    /// answers the existing id); whether it is new.
    ///
    /// # Errors
    /// 400 naming `endpoint`, `keys.p256dh` or `keys.auth` (an unusable URL or key), or
    /// `user`; 409 when the user holds `MAX_SUBSCRIPTIONS` already.
    pub async fn add_webpush_subscription(
        &self,
        app: &AppId,
        user: &str,
        new: NewSubscription,
    ) -> ServiceResult<(PushSubscription, bool)> {
        let user = user_id(user)?;
        url_field("endpoint", &new.endpoint)?;
        SubscriptionKeys::from_base64(&new.p256dh, &new.auth).map_err(|e| match e {
            WebPushError::BadKey { field, reason } => {
                ServiceError::bad_request(&format!("keys.{field}"), reason)
            }
            other => ServiceError::bad_request("keys", other.to_string()),
        })?;
        let subscription = PushSubscription {
            id: new_message_id(),
            app: app.clone(),
            user,
            endpoint: new.endpoint,
            p256dh: new.p256dh,
            auth: new.auth,
            created_us: now_us(),
        };
        match self.stores.webpush.add_subscription(&subscription).await? {
            Added::New(s) => Ok((s, true)),
            Added::Existing(s) => Ok((s, false)),
            Added::Full => Err(ServiceError::Conflict(format!(
                "The user holds {MAX_SUBSCRIPTIONS} Web Push subscriptions already; remove one first."
            ))),
        }
    }

    /// The user's subscriptions, oldest first.
    pub async fn webpush_subscriptions(
        &self,
        app: &AppId,
        user: &str,
    ) -> ServiceResult<Vec<PushSubscription>> {
        let user = user_id(user)?;
        Ok(self.stores.webpush.subscriptions(app, &user).await?)
    }

    /// Removes the user's subscription `id`; 404 when there is none.
    pub async fn remove_webpush_subscription(
        &self,
        app: &AppId,
        user: &str,
        id: &str,
    ) -> ServiceResult<()> {
        let user = user_id(user)?;
        if self
            .stores
            .webpush
            .remove_subscription(app, &user, id)
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::not_found(
                "subscription",
                "No such Web Push subscription.",
            ))
        }
    }

    /// Queues for the Web Push sender each of `messages` (just created, all of `app`)
    /// whose recipient holds a subscription, due after `webpush.delay_ms`. A failure is
    /// logged, not returned: the messages are stored, and an offline recipient still gets
    /// them on their next connection.
    pub(crate) async fn queue_webpush(&self, app: &AppId, messages: &[AddressedMessage]) {
        if messages.is_empty() {
            return;
        }
        let users: Vec<UserId> = messages.iter().map(|m| m.recipient.clone()).collect();
        let subscribed = match self.stores.webpush.subscribed(app, &users).await {
            Ok(subscribed) => subscribed,
            Err(e) => {
                tracing::warn!(%app, error = %e, "cannot read Web Push subscriptions; offline recipients get their messages when they connect");
                return;
            }
        };
        let jobs: Vec<PushJob> = messages
            .iter()
            .zip(subscribed)
            .filter(|(_, subscribed)| *subscribed)
            .map(|(m, _)| PushJob {
                id: new_message_id(),
                app: app.clone(),
                user: Some(m.recipient.clone()),
                message_id: m.id.clone(),
                attempts: 0,
            })
            .collect();
        if jobs.is_empty() {
            return;
        }
        let due = now_us().saturating_add(self.settings.webpush_delay_us);
        if let Err(e) = self.stores.webpush.enqueue_pushes(&jobs, due).await {
            tracing::warn!(%app, error = %e, "cannot queue Web Push fallbacks; offline recipients get their messages when they connect");
        }
    }
}

fn user_id(user: &str) -> ServiceResult<UserId> {
    UserId::parse(user).map_err(|e| ServiceError::bad_request("user", e.to_string()))
}
