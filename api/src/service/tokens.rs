//! Minting connection tokens (SPEC §4 `POST /api/v1/tokens`): a JWT signed with the
//! calling key (`common::jwt`), and where to connect with it.

use std::net::IpAddr;

use common::auth::Caller;
use common::clock::{now_us, us_to_secs};
use common::ids::{ChannelPattern, UserId};
use common::jwt::{Claims, SIGNING_SCOPE, may_sign, sign};

use super::{ServiceError, ServiceResult, Services};

/// What a token should allow.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub user: Option<UserId>,
    pub channels: Vec<ChannelPattern>,
    pub topics: Vec<String>,
    pub origin: Option<String>,
    pub source_ip: Option<IpAddr>,
    /// Seconds; the default when `None`.
    pub ttl: Option<u64>,
    pub publish: bool,
    pub ack: bool,
}

/// A minted token.
#[derive(Debug, Clone, PartialEq)]
pub struct Minted {
    pub token: String,
    /// `ws://<least loaded healthy edge>/ws?token=…`, if an edge is up.
    pub connection_uri: Option<String>,
    /// That edge's `ws://` base URL (other dialects build their URI from it).
    pub edge: Option<String>,
    pub expires_us: i64,
}

/// Most channel patterns and topics one token carries.
pub const MAX_TOKEN_LISTS: usize = 100;

impl Services {
    /// Mints a connection token for `request.user`, signed with the caller's key.
    pub async fn mint_token(
        &self,
        caller: Caller<'_>,
        request: TokenRequest,
    ) -> ServiceResult<Minted> {
        let user = request
            .user
            .ok_or_else(|| ServiceError::bad_request("user", "is required"))?;
        if !may_sign(caller.key) {
            return Err(ServiceError::Forbidden(format!(
                "the key needs the {SIGNING_SCOPE} scope"
            )));
        }
        let ttl = request.ttl.unwrap_or(self.settings.token_ttl_default);
        if ttl == 0 || ttl > self.settings.token_ttl_max {
            return Err(ServiceError::bad_request(
                "ttl",
                format!(
                    "must be between 1 and {} seconds",
                    self.settings.token_ttl_max
                ),
            ));
        }
        for (field, len) in [
            ("channels", request.channels.len()),
            ("topics", request.topics.len()),
        ] {
            if len > MAX_TOKEN_LISTS {
                return Err(ServiceError::bad_request(
                    field,
                    format!("at most {MAX_TOKEN_LISTS} entries"),
                ));
            }
        }
        let now = now_us();
        let expires_us = now.saturating_add((ttl as i64).saturating_mul(1_000_000));
        let claims = Claims {
            sub: user.to_string(),
            app: caller.app.id.to_string(),
            channels: request
                .channels
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            topics: request.topics,
            origin: request.origin,
            sip: request.source_ip.map(|ip| ip.to_string()),
            publish: request.publish,
            ack: request.ack,
            probe: false,
            exp: (expires_us / 1_000_000) as f64,
            iat: Some(us_to_secs(now)),
            nbf: None,
        };
        let token = sign(caller.key, &claims).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let edge = self.edges(1).await?.first().map(|edge| edge.url.clone());
        let connection_uri = edge.as_ref().map(|url| format!("{url}/ws?token={token}"));
        Ok(Minted {
            token,
            connection_uri,
            edge,
            expires_us: (expires_us / 1_000_000) * 1_000_000,
        })
    }
}
