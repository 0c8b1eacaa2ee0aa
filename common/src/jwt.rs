//! Connection tokens (SPEC §4 Tokens): standard JWTs (RFC 7519), HS256 (RFC 7518 §3.2)
//! signed with one of the app's API key secrets, the key named by the header's `kid`. The
//! algorithm is pinned (`none` and every other `alg` are refused), `exp` is required, `nbf`
//! is honoured, both with `CLOCK_SKEW` of leeway. An application may mint the same tokens
//! itself with any JWT library (see docs/websocket.md); `POST /api/v1/tokens` is the same
//! thing done by Herald.
//!
//! Claims: `sub` (user), `app`, `channels` (names or `prefix*` patterns), `topics`,
//! `origin`, `sip` (source IP), `pub` (may publish), `ack` (at-least-once), `probe` (a
//! monitoring socket: no presence, no `connected`/`disconnected` events, not a broadcast
//! recipient — what the monitor's canary uses), `exp`, `iat`, `nbf` (NumericDate: seconds
//! since the epoch, possibly fractional, RFC 7519 §2). Herald
//! writes `iat` with microseconds, so a force logout can tell a token minted just before
//! it from one minted just after.

use std::net::IpAddr;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::auth::{ApiKey, App, Apps};
use crate::ids::{AppId, ChannelPattern, UserId};

/// Seconds of clock difference tolerated on `exp` and `nbf`.
pub const CLOCK_SKEW: u64 = 30;
/// The scope a key needs for its tokens to be accepted.
pub const SIGNING_SCOPE: &str = "tokens:create";
/// The Socrate scope that lets a key register recipients (`registerRecipient`), and so
/// sign their tokens too.
pub const SOCRATE_SIGNING_SCOPE: &str = "websockets-manager-api:mutation:registerRecipient";

/// Whether tokens signed with `key` are accepted: it holds `tokens:create` or Socrate's
/// `registerRecipient` scope.
pub fn may_sign(key: &ApiKey) -> bool {
    key.allows(SIGNING_SCOPE) || key.allows(SOCRATE_SIGNING_SCOPE)
}

/// Longest token accepted, in bytes (bounds the work done on garbage).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims of a connection token, as serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<String>,
    #[serde(default, rename = "pub", skip_serializing_if = "is_false")]
    pub publish: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ack: bool,
    /// A monitoring socket, invisible to the app (no presence, events or broadcasts).
    #[serde(default, skip_serializing_if = "is_false")]
    pub probe: bool,
    pub exp: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<f64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a verified token allows its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub app: AppId,
    pub user: UserId,
    pub channels: Vec<ChannelPattern>,
    pub topics: Vec<String>,
    pub origin: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub publish: bool,
    pub ack: bool,
    /// A monitoring socket: no presence, no socket events, no broadcasts.
    pub probe: bool,
    /// Microseconds since the epoch; 0 when the token has no `iat`.
    pub issued_us: i64,
    pub expires_us: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token must be signed with HS256 and name its key in `kid`")]
    Algorithm,
    #[error("the token names an unknown app or key")]
    UnknownKey,
    #[error("the token's key may not sign connection tokens (needs tokens:create)")]
    KeyNotAllowed,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's `{0}` claim is invalid")]
    Claim(&'static str),
}

/// Signs `claims` with `key` (whose name becomes the `kid`).
pub fn sign(key: &ApiKey, claims: &Claims) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.name.clone());
    let secret = EncodingKey::from_secret(key.secret()).map_err(|_| TokenError::UnknownKey)?;
    jsonwebtoken::encode(&header, claims, &secret).map_err(|_| TokenError::Malformed)
}

/// Just enough of the claims to find the app, read before the signature is checked.
#[derive(Deserialize)]
struct AppClaim {
    app: String,
}

/// Verifies `token` against the apps' keys at `now` (seconds since the epoch).
pub fn verify(apps: &Apps, token: &str, now: f64) -> Result<Grant, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::HS256 {
        return Err(TokenError::Algorithm);
    }
    let kid = header.kid.ok_or(TokenError::Algorithm)?;
    let peek: AppClaim = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| TokenError::Claim("app"))?;
    let app = apps.app(&peek.app).ok_or(TokenError::UnknownKey)?;
    let key = app.key(&kid).ok_or(TokenError::UnknownKey)?;
    if !may_sign(key) {
        return Err(TokenError::KeyNotAllowed);
    }
    let claims = checked_claims(token, key)?;
    if !claims.exp.is_finite() || claims.exp + (CLOCK_SKEW as f64) < now {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf - (CLOCK_SKEW as f64) > now)
    {
        return Err(TokenError::NotYetValid);
    }
    // An `iat` in the future (often milliseconds where seconds belong) would make the
    // token outlive every force logout (`iat` < not-before never holds).
    if claims
        .iat
        .is_some_and(|iat| !iat.is_finite() || iat - (CLOCK_SKEW as f64) > now)
    {
        return Err(TokenError::Claim("iat"));
    }
    grant(app, claims)
}

/// Checks the signature with `key` and reads the claims (time checks are the caller's,
/// against its own clock).
fn checked_claims(token: &str, key: &ApiKey) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    // `aud` is the application's business (RFC 7519 §4.1.3 leaves its values to it).
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    let secret = DecodingKey::from_secret(key.secret()).map_err(|_| TokenError::UnknownKey)?;
    match jsonwebtoken::decode::<Claims>(token, &secret, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => TokenError::Claim("exp"),
            jsonwebtoken::errors::ErrorKind::Json(_) => TokenError::Claim("claims"),
            _ => TokenError::Malformed,
        }),
    }
}

fn grant(app: &App, claims: Claims) -> Result<Grant, TokenError> {
    let mut channels: Vec<ChannelPattern> = Vec::with_capacity(claims.channels.len());
    for name in claims.channels {
        let pattern = ChannelPattern::parse(name).map_err(|_| TokenError::Claim("channels"))?;
        if !channels.contains(&pattern) {
            channels.push(pattern);
        }
    }
    let source_ip = claims
        .sip
        .map(|s| s.parse::<IpAddr>())
        .transpose()
        .map_err(|_| TokenError::Claim("sip"))?;
    Ok(Grant {
        app: app.id.clone(),
        user: UserId::parse(claims.sub).map_err(|_| TokenError::Claim("sub"))?,
        channels,
        topics: claims.topics,
        origin: claims.origin,
        source_ip,
        publish: claims.publish,
        ack: claims.ack,
        probe: claims.probe,
        issued_us: claims.iat.and_then(crate::clock::secs_to_us).unwrap_or(0),
        expires_us: crate::clock::secs_to_us(claims.exp).unwrap_or(i64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKeyConfig, AppConfig};

    fn apps() -> Apps {
        let key = |name: &str, scopes: &[&str]| ApiKeyConfig {
            name: name.into(),
            secret: format!("secret-of-{name}-0123456789"),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        Apps::from_config(&[AppConfig {
            id: "dev".into(),
            key: "dev-public".into(),
            trust_user_ids: false,
            keys: vec![key("admin", &["*:*"]), key("reader", &["channels:read"])],
        }])
    }

    fn claims(exp: f64) -> Claims {
        Claims {
            sub: "alice".into(),
            app: "dev".into(),
            channels: vec!["news".into(), "room:*".into()],
            topics: vec!["sport".into()],
            origin: Some("https://app.example".into()),
            sip: Some("127.0.0.1".into()),
            publish: true,
            ack: false,
            probe: false,
            exp,
            iat: Some(100.25),
            nbf: None,
        }
    }

    fn admin(apps: &Apps) -> &ApiKey {
        apps.app("dev").unwrap().key("admin").unwrap()
    }

    #[test]
    fn a_signed_token_verifies_into_its_grant() {
        let apps = apps();
        let token = sign(admin(&apps), &claims(1_000.0)).unwrap();
        let grant = verify(&apps, &token, 500.0).unwrap();
        assert_eq!(grant.user.as_str(), "alice");
        assert_eq!(grant.channels.len(), 2);
        assert_eq!(grant.source_ip, Some("127.0.0.1".parse().unwrap()));
        assert!(grant.publish && !grant.ack);
        assert_eq!(
            (grant.issued_us, grant.expires_us),
            (100_250_000, 1_000_000_000)
        );
    }

    #[test]
    fn expiry_and_not_before_honour_the_clock_skew() {
        let apps = apps();
        let token = sign(admin(&apps), &claims(1_000.0)).unwrap();
        let skew = CLOCK_SKEW as f64;
        assert!(verify(&apps, &token, 1_000.0 + skew).is_ok());
        assert_eq!(
            verify(&apps, &token, 1_001.0 + skew),
            Err(TokenError::Expired)
        );
        let mut early = claims(5_000.0);
        early.nbf = Some(2_000.0);
        let token = sign(admin(&apps), &early).unwrap();
        assert_eq!(verify(&apps, &token, 1_000.0), Err(TokenError::NotYetValid));
        assert!(verify(&apps, &token, 2_000.0 - skew).is_ok());
    }

    #[test]
    fn forged_unsigned_and_foreign_tokens_are_refused() {
        let apps = apps();
        let token = sign(admin(&apps), &claims(1_000.0)).unwrap();
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(verify(&apps, &forged, 0.0), Err(TokenError::Signature));
        let (head, rest) = token.split_once('.').unwrap();
        let _ = head;
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiYWRtaW4ifQ";
        let payload = rest.split('.').next().unwrap();
        let unsigned = format!("{none_header}.{payload}.");
        assert!(matches!(
            verify(&apps, &unsigned, 0.0),
            Err(TokenError::Malformed | TokenError::Algorithm)
        ));
        let reader = apps.app("dev").unwrap().key("reader").unwrap();
        let weak = sign(reader, &claims(1_000.0)).unwrap();
        assert_eq!(verify(&apps, &weak, 0.0), Err(TokenError::KeyNotAllowed));
        let mut elsewhere = claims(1_000.0);
        elsewhere.app = "nope".into();
        let foreign = sign(admin(&apps), &elsewhere).unwrap();
        assert_eq!(verify(&apps, &foreign, 0.0), Err(TokenError::UnknownKey));
        for garbage in ["", "a.b.c", "not a token", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(verify(&apps, garbage, 0.0).is_err(), "{garbage}");
        }
    }

    #[test]
    fn invalid_claims_are_named() {
        let apps = apps();
        let mut bad = claims(1_000.0);
        bad.channels = vec!["not a channel".into()];
        let token = sign(admin(&apps), &bad).unwrap();
        assert_eq!(
            verify(&apps, &token, 200.0),
            Err(TokenError::Claim("channels"))
        );
        let mut bad = claims(1_000.0);
        bad.sub = String::new();
        let token = sign(admin(&apps), &bad).unwrap();
        assert_eq!(verify(&apps, &token, 200.0), Err(TokenError::Claim("sub")));
    }

    #[test]
    fn an_iat_in_the_future_is_refused_within_the_skew() {
        let apps = apps();
        let mut millis = claims(2e12);
        millis.iat = Some(1.7e12);
        let token = sign(admin(&apps), &millis).unwrap();
        assert_eq!(verify(&apps, &token, 1.7e9), Err(TokenError::Claim("iat")));
        let token = sign(admin(&apps), &claims(1_000.0)).unwrap();
        let skew = CLOCK_SKEW as f64;
        assert!(verify(&apps, &token, 100.25 - skew).is_ok());
        assert_eq!(
            verify(&apps, &token, 99.0 - skew),
            Err(TokenError::Claim("iat"))
        );
    }

    #[test]
    fn an_audience_claim_is_left_to_the_application() {
        let apps = apps();
        let key = admin(&apps);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.name.clone());
        let claims = serde_json::json!({
            "sub": "alice", "app": "dev", "exp": 1_000.0, "aud": ["my-app"],
            "channels": ["news", "news", "room:*"],
        });
        let secret = EncodingKey::from_secret(key.secret()).unwrap();
        let token = jsonwebtoken::encode(&header, &claims, &secret).unwrap();
        let grant = verify(&apps, &token, 500.0).unwrap();
        assert_eq!(grant.channels.len(), 2, "duplicates are listed once");
    }
}
