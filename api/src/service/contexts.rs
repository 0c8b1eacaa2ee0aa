//! VPush contexts (SPEC §5 VPush): a context is a channel created by name; signing one
//! gives a connection token that may subscribe and publish to that channel only.

use common::auth::Caller;
use common::clock::now_us;
use common::ids::{AppId, ChannelName, ChannelPattern, UserId, new_message_id};
use common::store::Context;
use common::token::random_hex;

use super::tokens::TokenRequest;
use super::{ServiceError, ServiceResult, Services};

/// Longest context name, bytes.
pub const MAX_CONTEXT_NAME: usize = 256;

impl Services {
    /// Creates a context (a channel with a fresh id).
    pub async fn create_context(
        &self,
        app: &AppId,
        name: Option<String>,
    ) -> ServiceResult<Context> {
        if name.as_ref().is_some_and(|n| n.len() > MAX_CONTEXT_NAME) {
            return Err(ServiceError::bad_request(
                "name",
                format!("must be at most {MAX_CONTEXT_NAME} bytes"),
            ));
        }
        let context = Context {
            id: ChannelName::parse(new_message_id()).expect("hex is a channel name"),
            name,
            created_us: now_us(),
        };
        self.stores.contexts.create_context(app, &context).await?;
        Ok(context)
    }

    pub async fn contexts(&self, app: &AppId) -> ServiceResult<Vec<Context>> {
        Ok(self.stores.contexts.contexts(app).await?)
    }

    /// The context `id` of `app`.
    pub async fn context(&self, app: &AppId, id: &str) -> ServiceResult<Context> {
        let missing = || ServiceError::not_found("contextId", "No such context.");
        let id = ChannelName::parse(id).map_err(|_| missing())?;
        self.stores
            .contexts
            .context(app, &id)
            .await?
            .ok_or_else(missing)
    }

    /// A connection token for an anonymous subscriber of context `id`, who may publish
    /// to it.
    pub async fn sign_context(&self, caller: Caller<'_>, id: &str) -> ServiceResult<String> {
        let context = self.context(&caller.app.id, id).await?;
        let user = UserId::parse(format!("vpush:{}", random_hex(8))).expect("a valid user id");
        let request = TokenRequest {
            user: Some(user),
            channels: vec![ChannelPattern::parse(context.id.as_str()).expect("a channel name")],
            publish: true,
            ..TokenRequest::default()
        };
        Ok(self.mint_token(caller, request).await?.token)
    }
}
