//! Web Push's cryptography, for sending to a browser's push service: the message body
//! encrypted to the subscription's keys (RFC 8291, `aes128gcm` content coding of RFC 8188,
//! one record) and the application server's VAPID signature (RFC 8292: an ES256 JWT whose
//! `aud` is the push service's origin, sent as `Authorization: vapid t=<jwt>, k=<key>`).
//! Built on crates already in the tree: the RustCrypto primitives (p256 for ECDH, hkdf,
//! aes-gcm; no OpenSSL) composed as RFC 8291 says and checked against its Appendix A
//! example byte for byte, and `jsonwebtoken` for the VAPID JWT. [`send`] makes one push request and reads the push service's answer as an
//! [`Outcome`] (RFC 8030): sent, gone for good, worth retrying (with its `Retry-After`), or
//! failed; what to do next is the caller's.
//!
//! Keys travel as unpadded base64url, as browsers give them (`PushSubscription.getKey`) and
//! as PushPushGo's `vapid` provider holds them; padded or standard-alphabet base64 is read
//! too.

use aes_gcm::Aes128Gcm;
use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::pkcs8::EncodePrivateKey;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// The record size written in the header; one record holds the whole message.
const RECORD_SIZE: u32 = 4096;
/// salt (16) + record size (4) + key id length (1) + the sender's public key (65).
const HEADER_LEN: usize = 86;
/// The most plaintext one push may carry: push services need accept only 4096 bytes of
/// body (RFC 8030 §7.2), less the header, the padding delimiter and the AEAD tag
/// (RFC 8291 §4).
pub const MAX_PLAINTEXT: usize = 4096 - HEADER_LEN - 1 - 16;

/// Why a key or a message was refused; `field` names the input at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebPushError {
    #[error("{field}: {reason}")]
    BadKey {
        field: &'static str,
        reason: &'static str,
    },
    #[error(
        "the encrypted push would exceed 4096 bytes: {len} bytes of payload, at most {MAX_PLAINTEXT}"
    )]
    TooLarge { len: usize },
    #[error("endpoint: not an http(s) URL")]
    BadEndpoint,
    #[error("the VAPID key could not sign")]
    Signing,
}

fn bad(field: &'static str, reason: &'static str) -> WebPushError {
    WebPushError::BadKey { field, reason }
}

/// Decodes base64url (padding optional); standard-alphabet base64 is accepted as well.
fn decode(field: &'static str, text: &str) -> Result<Vec<u8>, WebPushError> {
    let normalised: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD
        .decode(normalised)
        .map_err(|_| bad(field, "not base64url"))
}

/// A subscription's keys (`PushSubscription.getKey("p256dh")` and `"auth"`).
#[derive(Debug, Clone)]
pub struct SubscriptionKeys {
    p256dh: PublicKey,
    auth: [u8; 16],
}

impl SubscriptionKeys {
    /// Reads `p256dh` (an uncompressed P-256 point, 65 bytes) and `auth` (16 bytes).
    ///
    /// # Errors
    /// `BadKey` naming `p256dh` or `auth`.
    pub fn from_base64(p256dh: &str, auth: &str) -> Result<SubscriptionKeys, WebPushError> {
        let point = decode("p256dh", p256dh)?;
        if point.len() != 65 || point[0] != 4 {
            return Err(bad("p256dh", "not an uncompressed P-256 point (65 bytes)"));
        }
        let p256dh =
            PublicKey::from_sec1_bytes(&point).map_err(|_| bad("p256dh", "not a P-256 point"))?;
        let auth: [u8; 16] = decode("auth", auth)?
            .try_into()
            .map_err(|_| bad("auth", "not 16 bytes"))?;
        Ok(SubscriptionKeys { p256dh, auth })
    }
}

/// Encrypts `plaintext` for one subscription: the body of the push request, to be sent with
/// `Content-Encoding: aes128gcm`.
///
/// # Errors
/// `TooLarge` past [`MAX_PLAINTEXT`] bytes.
pub fn encrypt(plaintext: &[u8], keys: &SubscriptionKeys) -> Result<Vec<u8>, WebPushError> {
    let sender = SecretKey::generate();
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's random source");
    encrypt_with(plaintext, keys, &sender, salt)
}

/// `encrypt` with the sender's one-time key and the salt given (RFC 8291 §3.4, §4).
fn encrypt_with(
    plaintext: &[u8],
    keys: &SubscriptionKeys,
    sender: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, WebPushError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(WebPushError::TooLarge {
            len: plaintext.len(),
        });
    }
    let sender_public = sender.public_key().to_sec1_point(false);
    let receiver_public = keys.p256dh.to_sec1_point(false);
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), keys.p256dh.as_affine());
    // IKM = HKDF(auth, ecdh, "WebPush: info" || 0 || ua_public || as_public, 32)
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(receiver_public.as_bytes());
    info.extend_from_slice(sender_public.as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&keys.auth[..]), shared.raw_secret_bytes())
        .expand(&info, &mut ikm)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    let prk = Hkdf::<Sha256>::new(Some(&salt[..]), &ikm);
    let mut key = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut key)
        .expect("16 bytes is a valid HKDF-SHA256 length");
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("12 bytes is a valid HKDF-SHA256 length");
    // One record, the last: the plaintext, then the delimiter 0x02 and no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    let cipher = Aes128Gcm::new_from_slice(&key).expect("a 16-byte key");
    let sealed = cipher
        .encrypt(&nonce.into(), record.as_slice())
        .expect("AES-GCM encrypts any record this small");
    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(sender_public.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// An application server's VAPID key pair (RFC 8292 §3): P-256, the private key as its
/// 32-byte scalar and the public key as an uncompressed point, both base64url.
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
    public: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// Reads a key pair, checking that the public key is the private key's.
    ///
    /// # Errors
    /// `BadKey` naming `privateKey` or `publicKey`.
    pub fn from_base64(private: &str, public: &str) -> Result<VapidKey, WebPushError> {
        let scalar = decode("privateKey", private)?;
        let secret = SecretKey::from_slice(&scalar)
            .map_err(|_| bad("privateKey", "not a P-256 private key (32 bytes)"))?;
        let key = VapidKey::from_secret(&secret);
        let given = decode("publicKey", public)?;
        if given != URL_SAFE_NO_PAD.decode(&key.public).unwrap_or_default() {
            return Err(bad("publicKey", "not the public key of privateKey"));
        }
        Ok(key)
    }

    /// A new random key pair.
    pub fn generate() -> VapidKey {
        VapidKey::from_secret(&SecretKey::generate())
    }

    fn from_secret(secret: &SecretKey) -> VapidKey {
        let public = secret.public_key().to_sec1_point(false);
        VapidKey {
            signing: SigningKey::from(secret),
            public: URL_SAFE_NO_PAD.encode(public.as_bytes()),
        }
    }

    /// The public key, base64url (what browsers take as `applicationServerKey`).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The private key's scalar, base64url.
    pub fn private_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.to_bytes())
    }

    /// The `Authorization` header for a push to `endpoint`: `vapid t=<jwt>, k=<key>`, the
    /// JWT (ES256) with `aud` = the endpoint's origin (scheme, host and any non-default
    /// port), `exp` = `expires_at` (Unix seconds; RFC 8292 allows at most 24 h ahead) and
    /// `sub` = `subject` (a `mailto:` or `https:` contact) when not empty.
    ///
    /// The JWT is made by the `jsonwebtoken` crate.
    ///
    /// # Errors
    /// `Signing` if the key cannot sign (it always can once loaded).
    pub fn authorization(
        &self,
        endpoint: &reqwest::Url,
        subject: &str,
        expires_at: u64,
    ) -> Result<String, WebPushError> {
        let mut claims = serde_json::json!({
            "aud": endpoint.origin().ascii_serialization(),
            "exp": expires_at,
        });
        if !subject.is_empty() {
            claims["sub"] = subject.into();
        }
        let der = self
            .signing
            .to_pkcs8_der()
            .map_err(|_| WebPushError::Signing)?;
        let key = jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes());
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let token =
            jsonwebtoken::encode(&header, &claims, &key).map_err(|_| WebPushError::Signing)?;
        Ok(format!("vapid t={token}, k={}", self.public))
    }
}

/// How long a push service keeps an undelivered message, at most (RFC 8030 §5.2 `TTL`).
pub const MAX_TTL_SECONDS: u32 = 28 * 24 * 3600;
/// How far ahead a VAPID token's `exp` is set (RFC 8292 §2: at most 24 h).
const VAPID_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// How much of a push service's error answer is kept in `reason`.
const REASON_BYTES: usize = 200;

/// What a push service made of one push (RFC 8030 §5, §7.3, §8.4; RFC 8292 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx (201 Created): the push service took it and delivers it within its TTL.
    Sent,
    /// 404 or 410: the subscription is gone; never push to it again.
    Gone,
    /// 429, 5xx or no answer at all: worth another try, not before `after` when the push
    /// service said so (`Retry-After`).
    Retry {
        after: Option<std::time::Duration>,
        reason: String,
    },
    /// Any other answer (400, 401, 403 — e.g. a VAPID key the subscription was not made
    /// for —, 413, …): this push will not succeed as it is.
    Failed { reason: String },
}

/// The outcome of an answer with `status`, its `Retry-After` header if any, and its body.
pub fn outcome(
    status: u16,
    retry_after_header: Option<&str>,
    body: &str,
    now: std::time::SystemTime,
) -> Outcome {
    let reason = || {
        let mut end = body.len().min(REASON_BYTES);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        format!("{status} {}", body[..end].trim())
            .trim_end()
            .to_owned()
    };
    match status {
        200..=299 => Outcome::Sent,
        404 | 410 => Outcome::Gone,
        429 | 500..=599 => Outcome::Retry {
            after: retry_after_header.and_then(|v| retry_after(v, now)),
            reason: reason(),
        },
        _ => Outcome::Failed { reason: reason() },
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delta-seconds or an HTTP-date, as a wait
/// from `now` (zero for a date already past); `None` when it is neither.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<std::time::Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(std::time::Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// One push to send.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    /// The subscription's endpoint (`PushSubscription.endpoint`).
    pub endpoint: &'a str,
    pub keys: &'a SubscriptionKeys,
    /// What the browser's service worker gets (`event.data`), at most [`MAX_PLAINTEXT`]
    /// bytes.
    pub payload: &'a [u8],
    /// Seconds the push service may keep it while the browser is offline (capped at
    /// [`MAX_TTL_SECONDS`]).
    pub ttl_seconds: u32,
}

/// Encrypts, signs (VAPID with `key` and contact `subject`) and POSTs `push` with `http`
/// (whose timeouts bound the wait); the push service's answer as an [`Outcome`]. A request
/// that gets no answer is `Retry`.
///
/// # Errors
/// The endpoint is not an http(s) URL, or the payload is too large.
pub async fn send(
    http: &reqwest::Client,
    key: &VapidKey,
    subject: &str,
    push: Push<'_>,
) -> Result<Outcome, WebPushError> {
    let endpoint = reqwest::Url::parse(push.endpoint).map_err(|_| WebPushError::BadEndpoint)?;
    if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
        return Err(WebPushError::BadEndpoint);
    }
    let body = encrypt(push.payload, push.keys)?;
    let now = std::time::SystemTime::now();
    let expires = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(VAPID_LIFETIME)
        .as_secs();
    let authorization = key.authorization(&endpoint, subject, expires)?;
    let answer = http
        .post(endpoint)
        .header("TTL", push.ttl_seconds.min(MAX_TTL_SECONDS))
        .header("Content-Encoding", "aes128gcm")
        .header("Content-Type", "application/octet-stream")
        .header("Authorization", authorization)
        .body(body)
        .send()
        .await;
    let response = match answer {
        Ok(response) => response,
        Err(e) => {
            return Ok(Outcome::Retry {
                after: None,
                reason: format!("no answer: {e}"),
            });
        }
    };
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    Ok(outcome(status, header.as_deref(), &text, now))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// RFC 8291 Appendix A: the example's keys, salt and message give its exact body.
    #[test]
    fn encrypts_the_rfc_8291_example_exactly() {
        let keys = SubscriptionKeys::from_base64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        let sender =
            SecretKey::from_slice(&b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            b"When I grow up, I want to be a watermelon",
            &keys,
            &sender,
            salt,
        )
        .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn refuses_payloads_past_one_record_and_bad_keys_by_name() {
        let keys = SubscriptionKeys::from_base64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg==",
        )
        .unwrap();
        let body = encrypt(&[b'x'; MAX_PLAINTEXT], &keys).unwrap();
        assert_eq!(body.len(), 4096);
        assert_eq!(
            encrypt(&[b'x'; MAX_PLAINTEXT + 1], &keys),
            Err(WebPushError::TooLarge {
                len: MAX_PLAINTEXT + 1
            })
        );
        let short = SubscriptionKeys::from_base64("BCVxsr7N", "BTBZMqHH6r4Tts7J_aSIgg");
        assert!(matches!(
            short,
            Err(WebPushError::BadKey {
                field: "p256dh",
                ..
            })
        ));
        let auth = SubscriptionKeys::from_base64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZ",
        );
        assert!(matches!(
            auth,
            Err(WebPushError::BadKey { field: "auth", .. })
        ));
    }

    #[test]
    fn push_service_answers_map_to_outcomes() {
        use std::time::{Duration, UNIX_EPOCH};
        // Sun, 06 Nov 1994 08:49:37 GMT
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(outcome(201, None, "", now), Outcome::Sent);
        assert_eq!(outcome(404, None, "", now), Outcome::Gone);
        assert_eq!(outcome(410, None, "gone", now), Outcome::Gone);
        assert_eq!(
            outcome(429, Some("120"), "slow down", now),
            Outcome::Retry {
                after: Some(Duration::from_secs(120)),
                reason: "429 slow down".into()
            }
        );
        assert_eq!(
            outcome(503, Some("Sun, 06 Nov 1994 08:50:07 GMT"), "", now),
            Outcome::Retry {
                after: Some(Duration::from_secs(30)),
                reason: "503".into()
            }
        );
        assert_eq!(
            outcome(500, Some("soon"), "", now),
            Outcome::Retry {
                after: None,
                reason: "500".into()
            }
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        let long = "é".repeat(300);
        let Outcome::Failed { reason } = outcome(413, None, &long, now) else {
            panic!("413 is final");
        };
        assert!(
            reason.starts_with("413 é") && reason.len() <= 204,
            "{reason}"
        );
    }

    /// The JWT verifies with the public key in `k`, and `aud` keeps a non-default port.
    #[test]
    fn vapid_tokens_verify_and_name_the_push_services_origin() {
        use p256::ecdsa::signature::Verifier;
        use p256::ecdsa::{Signature, VerifyingKey};
        let key = VapidKey::generate();
        let again = VapidKey::from_base64(&key.private_key(), key.public_key()).unwrap();
        let endpoint = reqwest::Url::parse("http://127.0.0.1:40503/notify/abc").unwrap();
        let header = again
            .authorization(&endpoint, "mailto:ops@example.com", 1_800_000_000)
            .unwrap();
        let (token, k) = header
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(k, key.public_key());
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let verifying = VerifyingKey::from_sec1_bytes(&b64(k)).unwrap();
        let signature = Signature::from_slice(&b64(signature)).unwrap();
        verifying.verify(signed.as_bytes(), &signature).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&b64(signed.split_once('.').unwrap().1)).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"aud": "http://127.0.0.1:40503", "exp": 1_800_000_000u64,
                "sub": "mailto:ops@example.com"})
        );
        let other = VapidKey::generate();
        assert!(matches!(
            VapidKey::from_base64(&key.private_key(), other.public_key()),
            Err(WebPushError::BadKey {
                field: "publicKey",
                ..
            })
        ));
    }
}
