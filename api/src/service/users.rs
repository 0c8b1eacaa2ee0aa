//! User operations (SPEC §4 Users, §5 Thunderpush): presence, cluster-wide; an ephemeral
//! message to every socket of a user; force logout (close 4003 everywhere, and refuse
//! tokens issued before now).

use common::clock::now_us;
use common::ids::{AppId, UserId, new_message_id};
use common::message::{Delivery, JsonText, UserMessage};

use super::{ServiceResult, Services};

impl Services {
    /// Distinct users of `app` with a socket on an alive edge.
    pub async fn users_online(&self, app: &AppId) -> ServiceResult<u64> {
        Ok(self.stores.presence.users_online(app, self.alive()).await?)
    }

    /// How many sockets `user` has, cluster-wide.
    pub async fn user_connections(&self, app: &AppId, user: &UserId) -> ServiceResult<u64> {
        Ok(self
            .stores
            .presence
            .user_connections(app, user, self.alive())
            .await?)
    }

    /// Pushes `data` to every socket of `user` (at most once, not stored); how many sockets
    /// the user has (Thunderpush's count).
    pub async fn send_to_user_now(
        &self,
        app: &AppId,
        user: &UserId,
        data: JsonText,
    ) -> ServiceResult<u64> {
        let reached = self.user_connections(app, user).await?;
        let message = UserMessage {
            id: new_message_id(),
            app: app.clone(),
            user: user.clone(),
            data,
            created_us: now_us(),
        };
        self.publisher
            .publish(&Delivery::user_message(message))
            .await;
        Ok(reached)
    }

    /// Closes every socket of `user` on every edge (4003) and refuses the user's tokens
    /// issued before now. Durable before it returns; the closing itself is pushed.
    pub async fn force_logout(&self, app: &AppId, user: &UserId) -> ServiceResult<()> {
        let now = now_us();
        self.stores
            .revocations
            .revoke_before(app, user, now)
            .await?;
        let delivery = Delivery::logout(app.clone(), user.clone(), now);
        self.publisher.publish(&delivery).await;
        Ok(())
    }
}
