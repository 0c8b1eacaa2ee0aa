//! PushPushGo CORE buckets and contexts (SPEC §5 PushPushGo; docs/pushpushgo.md): a bucket
//! is created with provider credentials — `vapid` key pairs, the one provider this server
//! sends with; FCM, APNs and HMS need the outside world and are refused naming them — and
//! a callback (`http` URL with headers, or `none`), usable for 24 hours; contexts are
//! reusable `data`, `silent` or `raw` messages of a bucket, checked field by field and
//! kept as given. A send stores one message per receiver and queues it for the Web Push
//! sender (`crate::pusher`), which reports `sent`; clients report `delivered`, `clicked`
//! and `closed`. A receiver that names a Herald `user` instead gets an addressed message
//! (SPEC §4: socket first, then the user's own Web Push subscriptions) linked to the
//! bucket, whose status transitions and `event` frames reach the bucket's callback too.
//! The events reach the bucket's callback through the webhook outbox, as the webhook of
//! the app `ppg.<bucketId>`, in the seed's batch shape.

use common::clock::{now_us, parse_rfc3339};
use common::ids::{AppId, UserId, new_message_id, new_uuid};
use common::message::JsonText;
use common::store::{
    AddressedMessage, BatchFormat, Bucket, BucketContext, BucketMessage, Callback, ContextKind,
    Credential, EventKind, MessageBody, MessageStatus, PushJob, Webhook, WebhookEvent,
};
use serde_json::{Map, Value};

use super::messages::{MAX_LABEL, url_field};
use super::{ServiceError, ServiceResult, Services};
use crate::webpush::{SubscriptionKeys, VapidKey, WebPushError};

/// Providers PushPushGo CORE knows that need services outside this machine.
pub const UNSUPPORTED_PROVIDERS: [&str; 5] =
    ["fcm_v1", "fcm_legacy", "apns_cert", "apns_token", "hms"];
/// Most credentials in one bucket, and most callback headers.
pub const MAX_PROVIDERS: usize = 16;
pub const MAX_HEADERS: usize = 32;

/// One `providerCredentials` item as given.
#[derive(Debug, Clone)]
pub struct ProviderInput {
    pub kind: String,
    pub payload: Map<String, Value>,
}

/// `callbackConfig`.
#[derive(Debug, Clone)]
pub enum CallbackInput {
    Http {
        url: String,
        headers: Vec<(String, String)>,
    },
    None,
}

/// The type a context field must have.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Number,
    Flag,
    /// An ISO 8601 / RFC 3339 time.
    Time,
    /// Seconds: a non-negative number or a string of digits (the SDK's README sends "3600").
    Seconds,
    Numbers,
    Actions,
    Object,
    /// An object or a string.
    Data,
}

const DATA_FIELDS: &[(&str, Kind)] = &[
    ("title", Kind::Text),
    ("body", Kind::Text),
    ("subtitle", Kind::Text),
    ("icon", Kind::Text),
    ("smallIcon", Kind::Text),
    ("image", Kind::Text),
    ("channelName", Kind::Text),
    ("badge", Kind::Number),
    ("badgeMobile", Kind::Number),
    ("behaviour", Kind::Text),
    ("behaviourAndroid", Kind::Text),
    ("behaviourHuawei", Kind::Text),
    ("behaviourIos", Kind::Text),
    ("behaviourWebPush", Kind::Text),
    ("actions", Kind::Actions),
    ("expiresAt", Kind::Time),
    ("ttl", Kind::Seconds),
    ("lang", Kind::Text),
    ("renotify", Kind::Flag),
    ("requireInteraction", Kind::Flag),
    ("silent", Kind::Flag),
    ("tag", Kind::Text),
    ("vibrate", Kind::Numbers),
    ("externalData", Kind::Text),
    ("soundIos", Kind::Text),
    ("soundAndroid", Kind::Text),
    ("sound", Kind::Text),
];
const SILENT_FIELDS: &[(&str, Kind)] = &[
    ("externalData", Kind::Text),
    ("expiresAt", Kind::Time),
    ("ttl", Kind::Seconds),
];
const RAW_FIELDS: &[(&str, Kind)] = &[
    ("common", Kind::Object),
    ("chromium", Kind::Object),
    ("edge", Kind::Object),
    ("firefox", Kind::Object),
    ("safariVapid", Kind::Object),
    ("huawei", Kind::Object),
    ("ios", Kind::Object),
    ("safari", Kind::Object),
    ("android", Kind::Object),
];
/// The fields of `common` and of each browser's object in a raw context.
const RAW_COMMON_FIELDS: &[(&str, Kind)] = &[
    ("title", Kind::Text),
    ("body", Kind::Text),
    ("collapseKey", Kind::Text),
    ("data", Kind::Data),
    ("expiresAt", Kind::Time),
    ("iconUrl", Kind::Text),
    ("imageUrl", Kind::Text),
    ("ttl", Kind::Seconds),
];
const RAW_BROWSER_FIELDS: &[(&str, Kind)] = &[
    ("badge", Kind::Text),
    ("image", Kind::Text),
    ("icon", Kind::Text),
    ("actions", Kind::Actions),
    ("body", Kind::Text),
    ("data", Kind::Data),
    ("defaultAction", Kind::Text),
    ("dir", Kind::Text),
    ("expiresAt", Kind::Time),
    ("lang", Kind::Text),
    ("renotify", Kind::Flag),
    ("requireInteraction", Kind::Flag),
    ("silent", Kind::Flag),
    ("tag", Kind::Text),
    ("title", Kind::Text),
    ("ttl", Kind::Seconds),
    ("vibrate", Kind::Numbers),
];

fn bad(field: &str, message: &str) -> ServiceError {
    ServiceError::bad_request(field, message)
}

/// Checks that each field of `fields` present in `object` (a JSON object named
/// `prefix`) has its type; unknown fields are let through, as clients send extra ones.
fn check_fields(
    prefix: &str,
    object: &Map<String, Value>,
    fields: &[(&str, Kind)],
) -> ServiceResult<()> {
    for (name, kind) in fields {
        let Some(value) = object.get(*name).filter(|v| !v.is_null()) else {
            continue;
        };
        let field = format!("{prefix}{name}");
        let ok = match kind {
            Kind::Text => value.is_string(),
            Kind::Number => value.is_number(),
            Kind::Flag => value.is_boolean(),
            Kind::Time => value.as_str().is_some_and(|t| parse_rfc3339(t).is_some()),
            Kind::Seconds => {
                value.as_u64().is_some()
                    || value.as_f64().is_some_and(|f| f >= 0.0)
                    || value
                        .as_str()
                        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            }
            Kind::Numbers => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_number)),
            Kind::Object => value.is_object(),
            Kind::Data => value.is_object() || value.is_string(),
            Kind::Actions => {
                let Some(actions) = value.as_array() else {
                    return Err(bad(
                        &field,
                        "must be an array of {action, title, …} objects",
                    ));
                };
                for (i, action) in actions.iter().enumerate() {
                    let Some(action) = action.as_object() else {
                        return Err(bad(&format!("{field}[{i}]"), "must be an object"));
                    };
                    for (key, value) in action {
                        if !value.is_string() && !value.is_null() {
                            return Err(bad(&format!("{field}[{i}].{key}"), "must be a string"));
                        }
                    }
                }
                true
            }
        };
        if !ok {
            let expected = match kind {
                Kind::Text => "must be a string",
                Kind::Number => "must be a number",
                Kind::Flag => "must be true or false",
                Kind::Time => "must be an ISO 8601 time, e.g. 2026-12-01T10:00:00Z",
                Kind::Seconds => "must be a non-negative number of seconds",
                Kind::Numbers => "must be an array of numbers",
                Kind::Object => "must be an object",
                Kind::Data => "must be an object or a string",
                Kind::Actions => "must be an array of objects",
            };
            return Err(bad(&field, expected));
        }
    }
    Ok(())
}

impl Services {
    /// Creates a bucket of `app` with `providers` (each `vapid`, in order) and
    /// `callback`, usable for `webpush.bucket_lifetime_ms` (24 hours).
    ///
    /// # Errors
    /// 400 naming the field: an unsupported provider (`providerCredentials[i].type`,
    /// naming it), an unknown one, a VAPID key that does not load or whose public half
    /// does not match, a callback URL that is not http(s), too many providers or headers.
    pub async fn create_bucket(
        &self,
        app: &AppId,
        providers: Vec<ProviderInput>,
        callback: CallbackInput,
    ) -> ServiceResult<Bucket> {
        if providers.len() > MAX_PROVIDERS {
            return Err(bad(
                "providerCredentials",
                &format!("lists more than {MAX_PROVIDERS} providers"),
            ));
        }
        let mut credentials = Vec::with_capacity(providers.len());
        for (i, provider) in providers.into_iter().enumerate() {
            let at = format!("providerCredentials[{i}]");
            match provider.kind.as_str() {
                "vapid" => {}
                kind if UNSUPPORTED_PROVIDERS.contains(&kind) => {
                    return Err(bad(
                        &format!("{at}.type"),
                        &format!(
                            "provider {kind:?} is not supported by this server: it sends Web Push (\"vapid\") only, as FCM, APNs and HMS need their vendors' services"
                        ),
                    ));
                }
                kind => {
                    return Err(bad(
                        &format!("{at}.type"),
                        &format!("unknown provider {kind:?}; this server supports \"vapid\""),
                    ));
                }
            }
            let text = |name: &str| -> ServiceResult<String> {
                provider
                    .payload
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        bad(
                            &format!("{at}.payload.{name}"),
                            "must be a base64url string",
                        )
                    })
            };
            let (public_key, private_key) = (text("publicKey")?, text("privateKey")?);
            VapidKey::from_base64(&private_key, &public_key).map_err(|e| match e {
                WebPushError::BadKey { field, reason } => {
                    bad(&format!("{at}.payload.{field}"), reason)
                }
                other => bad(&format!("{at}.payload"), &other.to_string()),
            })?;
            credentials.push(Credential {
                id: new_uuid(),
                provider: provider.kind,
                public_key,
                private_key,
            });
        }
        let callback = match callback {
            CallbackInput::None => None,
            CallbackInput::Http { url, headers } => {
                url_field("callbackConfig.payload.url", &url)?;
                if headers.len() > MAX_HEADERS {
                    return Err(bad(
                        "callbackConfig.payload.headers",
                        &format!("lists more than {MAX_HEADERS} headers"),
                    ));
                }
                for (name, value) in &headers {
                    let field = format!("callbackConfig.payload.headers.{name}");
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(bad(&field, "is not a valid header name"));
                    }
                    if reqwest::header::HeaderValue::from_str(value).is_err() {
                        return Err(bad(&field, "is not a valid header value"));
                    }
                }
                Some(Callback { url, headers })
            }
        };
        let now = now_us();
        let bucket = Bucket {
            id: new_uuid(),
            app: app.clone(),
            credentials,
            callback,
            created_us: now,
            expires_us: now.saturating_add(self.settings.bucket_lifetime_us),
        };
        // The callback first: a bucket never exists without it. Its events go through
        // the webhook outbox, batched as the seed says (1000 events or 60 s).
        if let Some(callback) = &bucket.callback {
            let webhook = Webhook {
                app: callback_app(&bucket.id)?,
                url: callback.url.clone(),
                secret: String::new(),
                events: CALLBACK_EVENTS.to_vec(),
                max_batch: 1_000,
                max_delay_ms: self.settings.bucket_callback_delay_ms,
                updated_us: now,
                format: BatchFormat::PushPushGo {
                    headers: callback.headers.clone(),
                },
            };
            self.stores.webhooks.put_webhook(&webhook).await?;
        }
        self.stores.buckets.create_bucket(&bucket).await?;
        Ok(bucket)
    }

    /// Bucket `id` of `app` while it can be used; 404 when it is unknown, another app's or
    /// past its 24 hours.
    pub async fn usable_bucket(&self, app: &AppId, id: &str) -> ServiceResult<Bucket> {
        let id = id.to_ascii_lowercase();
        match self.stores.buckets.bucket(app, &id).await? {
            Some(bucket) if bucket.expires_us > now_us() => Ok(bucket),
            Some(_) => Err(ServiceError::not_found(
                "bucket",
                "The bucket has expired (a bucket can be used for 24 hours after it is created).",
            )),
            None => Err(ServiceError::not_found("bucket", "No such bucket.")),
        }
    }

    /// Creates a `kind` context in bucket `bucket` of `app` from `content` (a JSON object,
    /// kept as given once its known fields have their types).
    ///
    /// # Errors
    /// 404 as `usable_bucket`; 400 naming a field of the wrong type.
    pub async fn create_bucket_context(
        &self,
        app: &AppId,
        bucket: &str,
        kind: ContextKind,
        content: Map<String, Value>,
    ) -> ServiceResult<BucketContext> {
        let bucket = self.usable_bucket(app, bucket).await?;
        match kind {
            ContextKind::Data => check_fields("", &content, DATA_FIELDS)?,
            ContextKind::Silent => check_fields("", &content, SILENT_FIELDS)?,
            ContextKind::Raw => {
                check_fields("", &content, RAW_FIELDS)?;
                if let Some(common) = content.get("common").and_then(Value::as_object) {
                    check_fields("common.", common, RAW_COMMON_FIELDS)?;
                }
                for browser in ["chromium", "edge", "firefox", "safariVapid"] {
                    if let Some(object) = content.get(browser).and_then(Value::as_object) {
                        check_fields(&format!("{browser}."), object, RAW_BROWSER_FIELDS)?;
                    }
                }
            }
        }
        let context = BucketContext {
            id: new_uuid(),
            app: app.clone(),
            bucket: bucket.id,
            kind,
            content: JsonText::from(Value::Object(content)),
            created_us: now_us(),
        };
        self.stores.buckets.create_bucket_context(&context).await?;
        Ok(context)
    }
}

/// Most receivers of one send.
pub const MAX_RECEIVERS: usize = 1_000;
/// A message's lifetime when its context names none (the original's 24 hours), µs.
const DEFAULT_TTL_US: i64 = 24 * 3600 * 1_000_000;
/// The event kinds a bucket's callback gets (the seed's table, and receivers gone).
const CALLBACK_EVENTS: [EventKind; 5] = [
    EventKind::Sent,
    EventKind::Delivered,
    EventKind::Clicked,
    EventKind::Close,
    EventKind::Unregistered,
];

/// One `receivers` item (or the `receiver` of a one-off send) as given: CORE's flat
/// receiver, `{credentialId, foreignId?, endpoint, p256dh, auth}` for a `vapid` credential,
/// or Herald's `{user, foreignId?}` for a Herald user of the bucket's app, who gets it as
/// an addressed message (socket first, then the user's own Web Push subscriptions).
#[derive(Debug, Clone, Default)]
pub struct ReceiverInput {
    pub credential_id: Option<String>,
    pub foreign_id: Option<String>,
    pub endpoint: Option<String>,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub user: Option<String>,
    /// `<field>: <what>` for each field given with the wrong JSON type.
    pub malformed: Vec<String>,
}

/// What one receiver of a send becomes.
enum Planned {
    /// A push to a browser subscription, by the Web Push sender.
    Push(BucketMessage),
    /// An addressed message to a Herald user, linked to the bucket.
    User(AddressedMessage),
}

impl Planned {
    fn id(&self) -> &str {
        match self {
            Planned::Push(m) => &m.id,
            Planned::User(m) => &m.id,
        }
    }
}

/// The app id under which a bucket's callback is a webhook with its own outbox
/// (`common::store::buckets::callback_app`).
pub fn callback_app(bucket: &str) -> ServiceResult<AppId> {
    common::store::buckets::callback_app(bucket)
        .ok_or_else(|| ServiceError::Internal(format!("bucket id {bucket:?}")))
}

/// When a message of `context` created at `now` expires: its `expiresAt`, else `now` +
/// its `ttl` seconds, else 24 hours on.
fn expiry(context: &Map<String, Value>, now: i64) -> i64 {
    let from_ttl = match context.get("ttl") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.parse::<f64>().ok(),
        _ => None,
    };
    let raw_common = context.get("common").and_then(Value::as_object);
    let expires_at = context
        .get("expiresAt")
        .or_else(|| raw_common.and_then(|c| c.get("expiresAt")))
        .and_then(Value::as_str)
        .and_then(parse_rfc3339);
    let ttl = from_ttl.or_else(|| match raw_common.and_then(|c| c.get("ttl")) {
        Some(Value::Number(n)) => n.as_f64(),
        _ => None,
    });
    match (expires_at, ttl) {
        (Some(at), _) => at,
        (None, Some(seconds)) => now.saturating_add((seconds.max(0.0) * 1e6) as i64),
        (None, None) => now.saturating_add(DEFAULT_TTL_US),
    }
}

/// What `receiver` of a send of `context` in `bucket` becomes, or why it cannot be sent to
/// (each error `<field>: <what>`, fields under `prefix`).
fn plan(
    bucket: &Bucket,
    context: &BucketContext,
    receiver: ReceiverInput,
    prefix: &str,
    now: i64,
    expires_us: i64,
) -> Result<Planned, Vec<String>> {
    if !receiver.malformed.is_empty() {
        return Err(receiver
            .malformed
            .iter()
            .map(|e| format!("{prefix}{e}"))
            .collect());
    }
    if let Some(foreign_id) = &receiver.foreign_id
        && foreign_id.len() > MAX_LABEL
    {
        return Err(vec![format!(
            "{prefix}foreignId: is longer than {MAX_LABEL} bytes"
        )]);
    }
    if receiver.user.is_some() {
        return user_message(bucket, context, receiver, prefix, now, expires_us).map(Planned::User);
    }
    let message = bucket_message(bucket, context, receiver, prefix, now, expires_us)?;
    // The same check the push makes, before anything is promised.
    let size = push_payload(
        context,
        &message.id,
        message.foreign_id.as_deref(),
        &message.endpoint,
    )
    .len();
    if size > crate::webpush::MAX_PLAINTEXT {
        return Err(vec![format!(
            "{}: the push would carry {size} bytes of JSON, at most {}; shorten the context",
            prefix.trim_end_matches('.'),
            crate::webpush::MAX_PLAINTEXT
        )]);
    }
    Ok(Planned::Push(message))
}

/// The addressed message `{user, foreignId?}` gets: in the bucket's app, carrying as `data`
/// the payload a browser would get (so one client code reads both), linked to the bucket
/// so that its callback hears its `sent`, `delivered`, `clicked` and `close`.
fn user_message(
    bucket: &Bucket,
    context: &BucketContext,
    receiver: ReceiverInput,
    prefix: &str,
    now: i64,
    expires_us: i64,
) -> Result<AddressedMessage, Vec<String>> {
    let mut errors = Vec::new();
    for (name, value) in [
        ("credentialId", &receiver.credential_id),
        ("endpoint", &receiver.endpoint),
        ("p256dh", &receiver.p256dh),
        ("auth", &receiver.auth),
    ] {
        if value.is_some() {
            errors.push(format!(
                "{prefix}{name}: not used for a Herald user; a receiver names a user or a Web Push subscription, not both"
            ));
        }
    }
    let user = receiver.user.unwrap_or_default();
    let recipient = match UserId::parse(user.as_str()) {
        Ok(recipient) => Some(recipient),
        Err(e) => {
            errors.push(format!("{prefix}user: {e}"));
            None
        }
    };
    let (Some(recipient), true) = (recipient, errors.is_empty()) else {
        return Err(errors);
    };
    let id = new_message_id();
    let data = push_payload(context, &id, receiver.foreign_id.as_deref(), "");
    Ok(AddressedMessage {
        id,
        app: bucket.app.clone(),
        recipient,
        foreign_id: receiver.foreign_id,
        body: MessageBody::Data(JsonText::stored(data)),
        topic: None,
        status: MessageStatus::Pending,
        created_us: now,
        expires_us: Some(expires_us),
        delivered_us: None,
        delivered_via: None,
        cancelled_us: None,
        expired_us: None,
        global_message_id: None,
        bucket: Some(bucket.id.clone()),
    })
}

/// The push to the browser subscription of `receiver`, or why not.
fn bucket_message(
    bucket: &Bucket,
    context: &BucketContext,
    receiver: ReceiverInput,
    prefix: &str,
    now: i64,
    expires_us: i64,
) -> Result<BucketMessage, Vec<String>> {
    let mut errors = Vec::new();
    let credential = match &receiver.credential_id {
        None => {
            errors.push(format!("{prefix}credentialId: is required"));
            None
        }
        Some(id) => {
            let found = bucket
                .credentials
                .iter()
                .find(|c| c.id.eq_ignore_ascii_case(id));
            if found.is_none() {
                errors.push(format!(
                    "{prefix}credentialId: no credential {id:?} in this bucket"
                ));
            }
            found
        }
    };
    let text = |value: &Option<String>, name: &str, errors: &mut Vec<String>| match value {
        Some(v) if !v.is_empty() => v.clone(),
        _ => {
            errors.push(format!(
                "{prefix}{name}: is required for a vapid credential"
            ));
            String::new()
        }
    };
    let endpoint = text(&receiver.endpoint, "endpoint", &mut errors);
    let p256dh = text(&receiver.p256dh, "p256dh", &mut errors);
    let auth = text(&receiver.auth, "auth", &mut errors);
    if !endpoint.is_empty()
        && let Err(e) = url_field("endpoint", &endpoint)
    {
        errors.push(format!("{prefix}{e}"));
    }
    if !p256dh.is_empty()
        && !auth.is_empty()
        && let Err(WebPushError::BadKey { field, reason }) =
            SubscriptionKeys::from_base64(&p256dh, &auth)
    {
        errors.push(format!("{prefix}{field}: {reason}"));
    }
    match credential {
        Some(credential) if errors.is_empty() => Ok(BucketMessage {
            id: new_uuid(),
            app: bucket.app.clone(),
            bucket: bucket.id.clone(),
            context: context.id.clone(),
            credential: credential.id.clone(),
            endpoint,
            p256dh,
            auth,
            foreign_id: receiver.foreign_id,
            created_us: now,
            expires_us,
        }),
        _ => Err(errors),
    }
}

/// What a bucket message's push carries, as PushPushGo CORE's service worker reads it
/// (`event.data.json()`): the notification's options at the top (`title`, `body`, `icon`,
/// `image`, `badge` — the small icon's URL —, `actions`, `tag`, …) and `data` with
/// `contextId`, `messageId`, `foreignId`, `actionsMap` (the URL each action, and
/// `"default"` a click on the body, opens), `badge` (the app badge number) and
/// `externalData`. A silent context pushes only `data`, with `"_silent": true`; a raw
/// context its browser's object (`chromium`, `firefox`, `edge` or `safariVapid`, by the
/// push service of `endpoint`; else, and for a Herald user's `""`, `common`), with the
/// same `data` members added. JSON text.
pub fn push_payload(
    context: &BucketContext,
    message_id: &str,
    foreign_id: Option<&str>,
    endpoint: &str,
) -> String {
    let content = match context.content.value() {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut data = Map::new();
    data.insert("contextId".into(), Value::String(context.id.clone()));
    data.insert("messageId".into(), Value::String(message_id.to_owned()));
    if let Some(foreign_id) = foreign_id {
        data.insert("foreignId".into(), Value::String(foreign_id.to_owned()));
    }
    let text = |name: &str| content.get(name).and_then(Value::as_str).map(str::to_owned);
    let payload = match context.kind {
        ContextKind::Silent => {
            data.insert("_silent".into(), Value::Bool(true));
            if let Some(external) = text("externalData") {
                data.insert("externalData".into(), Value::String(external));
            }
            serde_json::json!({ "data": data })
        }
        ContextKind::Data => {
            let mut out = Map::new();
            out.insert(
                "title".into(),
                Value::String(text("title").unwrap_or_default()),
            );
            for (from, to) in [
                ("body", "body"),
                ("icon", "icon"),
                ("image", "image"),
                ("smallIcon", "badge"),
                ("tag", "tag"),
                ("lang", "lang"),
            ] {
                if let Some(value) = text(from) {
                    out.insert(to.into(), Value::String(value));
                }
            }
            for flag in ["requireInteraction", "silent"] {
                if let Some(value) = content.get(flag).filter(|v| v.is_boolean()) {
                    out.insert(flag.into(), value.clone());
                }
            }
            // Browsers refuse `renotify` without a `tag`.
            if out.contains_key("tag")
                && let Some(value) = content.get("renotify").filter(|v| v.is_boolean())
            {
                out.insert("renotify".into(), value.clone());
            }
            if let Some(vibrate) = content.get("vibrate").filter(|v| v.is_array()) {
                out.insert("vibrate".into(), vibrate.clone());
            }
            let mut actions_map = Map::new();
            if let Some(url) = text("behaviourWebPush").or_else(|| text("behaviour")) {
                actions_map.insert("default".into(), Value::String(url));
            }
            let mut actions = Vec::new();
            for action in content
                .get("actions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
            {
                let field = |name: &str| action.get(name).and_then(Value::as_str);
                let Some(name) = field("action") else {
                    continue;
                };
                let mut shown = Map::new();
                shown.insert("action".into(), Value::String(name.to_owned()));
                shown.insert(
                    "title".into(),
                    Value::String(field("title").unwrap_or(name).to_owned()),
                );
                if let Some(icon) = field("icon") {
                    shown.insert("icon".into(), Value::String(icon.to_owned()));
                }
                actions.push(Value::Object(shown));
                if let Some(url) = field("behaviourWebPush").or_else(|| field("behaviour")) {
                    actions_map.insert(name.to_owned(), Value::String(url.to_owned()));
                }
            }
            if !actions.is_empty() {
                out.insert("actions".into(), Value::Array(actions));
            }
            data.insert("actionsMap".into(), Value::Object(actions_map));
            if let Some(badge) = content.get("badge").filter(|v| v.is_number()) {
                data.insert("badge".into(), badge.clone());
            }
            if let Some(external) = text("externalData") {
                data.insert("externalData".into(), Value::String(external));
            }
            out.insert("data".into(), Value::Object(data));
            Value::Object(out)
        }
        ContextKind::Raw => {
            let host = reqwest::Url::parse(endpoint)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            let browser = if host == "fcm.googleapis.com" {
                "chromium"
            } else if host.ends_with("push.services.mozilla.com") {
                "firefox"
            } else if host.ends_with("notify.windows.com") {
                "edge"
            } else if host.ends_with("push.apple.com") {
                "safariVapid"
            } else {
                ""
            };
            let mut out = content
                .get(browser)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_else(|| {
                    let mut common = content
                        .get("common")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    for (from, to) in [("iconUrl", "icon"), ("imageUrl", "image")] {
                        if let Some(v) = common.remove(from) {
                            common.insert(to.into(), v);
                        }
                    }
                    common
                });
            for drop in ["ttl", "expiresAt", "collapseKey"] {
                out.remove(drop);
            }
            let mut merged = match out.remove("data") {
                Some(Value::Object(own)) => own,
                Some(Value::String(text)) => {
                    let mut m = Map::new();
                    m.insert("externalData".into(), Value::String(text));
                    m
                }
                _ => Map::new(),
            };
            if let Some(default) = out.get("defaultAction").and_then(Value::as_str) {
                let mut actions_map = Map::new();
                actions_map.insert("default".into(), Value::String(default.to_owned()));
                merged.insert("actionsMap".into(), Value::Object(actions_map));
            }
            merged.extend(data);
            out.insert("data".into(), Value::Object(merged));
            Value::Object(out)
        }
    };
    payload.to_string()
}

impl Services {
    /// Sends context `context` of bucket `bucket` to `receivers` (1..=1000): one message per
    /// receiver that is valid, queued for the Web Push sender; per receiver, in order, its
    /// message id or why it was refused.
    ///
    /// # Errors
    /// 404 for an unusable bucket or a context not of it; 400 naming `receivers` when
    /// there are none or more than 1000.
    pub async fn send_bucket_context(
        &self,
        app: &AppId,
        bucket: &str,
        context: &str,
        receivers: Vec<ReceiverInput>,
    ) -> ServiceResult<Vec<Result<String, Vec<String>>>> {
        let bucket = self.usable_bucket(app, bucket).await?;
        let context = self
            .stores
            .buckets
            .bucket_context(&context.to_ascii_lowercase())
            .await?
            .filter(|c| &c.app == app && c.bucket == bucket.id)
            .ok_or_else(|| ServiceError::not_found("context", "No such context in this bucket."))?;
        if receivers.is_empty() || receivers.len() > MAX_RECEIVERS {
            return Err(ServiceError::bad_request(
                "receivers",
                format!(
                    "must list 1 to {MAX_RECEIVERS} receivers, not {}",
                    receivers.len()
                ),
            ));
        }
        let now = now_us();
        let content = match context.content.value() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let expires_us = expiry(&content, now);
        if expires_us <= now {
            return Err(ServiceError::bad_request(
                "expiresAt",
                "the context's expiresAt has passed: nothing to send",
            ));
        }
        let outcomes: Vec<Result<Planned, Vec<String>>> = receivers
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                plan(
                    &bucket,
                    &context,
                    r,
                    &format!("receivers[{i}]."),
                    now,
                    expires_us,
                )
            })
            .collect();
        let mut pushes = Vec::new();
        let mut users = Vec::new();
        for planned in outcomes.iter().flatten() {
            match planned {
                Planned::Push(m) => pushes.push(m.clone()),
                Planned::User(m) => users.push(m.clone()),
            }
        }
        if !pushes.is_empty() {
            self.stores.buckets.create_bucket_messages(&pushes).await?;
            let jobs: Vec<PushJob> = pushes
                .iter()
                .map(|m| PushJob {
                    id: new_message_id(),
                    app: app.clone(),
                    user: None,
                    message_id: m.id.clone(),
                    attempts: 0,
                })
                .collect();
            self.stores.webpush.enqueue_pushes(&jobs, now).await?;
        }
        if !users.is_empty() {
            self.hand_over(app, &users).await?;
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.map(|p| p.id().to_owned()))
            .collect())
    }

    /// A one-off send (`/send`, `/send/silent`, `/send/raw`): a `kind` context from
    /// `metadata`, sent to `receiver`; the message id.
    ///
    /// # Errors
    /// As `create_bucket_context`; a receiver that cannot be sent to is a 400 naming its
    /// field (`receiver.…`).
    pub async fn send_bucket_message(
        &self,
        app: &AppId,
        bucket: &str,
        kind: ContextKind,
        metadata: Map<String, Value>,
        receiver: ReceiverInput,
    ) -> ServiceResult<String> {
        let context = self
            .create_bucket_context(app, bucket, kind, metadata)
            .await?;
        let mut results = self
            .send_bucket_context(app, bucket, &context.id, vec![receiver])
            .await?;
        match results.pop() {
            Some(Ok(id)) => Ok(id),
            Some(Err(errors)) => {
                let first = errors.first().cloned().unwrap_or_default();
                let (field, message) = first.split_once(": ").unwrap_or(("receiver", &first));
                Err(ServiceError::bad_request(
                    &field.replacen("receivers[0]", "receiver", 1),
                    message,
                ))
            }
            None => Err(ServiceError::Internal("Internal error.".into())),
        }
    }

    /// A client's event about message `message` of context `context` (`delivered`,
    /// `clicked`, `close`), for the bucket's callback, with the message's stored
    /// `foreignId`. A Herald user's message counts as a message of every context of its
    /// bucket.
    ///
    /// # Errors
    /// 404 for an unknown context, or a message not of it.
    pub async fn record_bucket_event(
        &self,
        context: &str,
        kind: EventKind,
        message: &str,
    ) -> ServiceResult<()> {
        let context = self
            .stores
            .buckets
            .bucket_context(&context.to_ascii_lowercase())
            .await?
            .ok_or_else(|| ServiceError::not_found("context", "No such context."))?;
        let id = message.to_ascii_lowercase();
        let found = match self.stores.buckets.bucket_message(&id).await? {
            Some(m) => Some(m)
                .filter(|m| m.context == context.id)
                .map(|m| (m.id, m.foreign_id)),
            // A Herald user's message: of the context's bucket.
            None => self
                .stores
                .messages
                .addressed_message(&context.app, &id)
                .await?
                .filter(|m| m.bucket.as_ref() == Some(&context.bucket))
                .map(|m| (m.id, m.foreign_id)),
        };
        let (message_id, foreign_id) = found.ok_or_else(|| {
            ServiceError::not_found("message", "No such message of this context.")
        })?;
        let event = WebhookEvent {
            id: new_message_id(),
            app: callback_app(&context.bucket)?,
            kind,
            message_id: Some(message_id),
            foreign_id,
            recipient: None,
            at_us: now_us(),
        };
        self.stores.webhooks.record_events(&[event]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn context_fields_are_checked_by_type_naming_the_field() {
        let ok = object(serde_json::json!({
            "title": "t", "ttl": "3600", "badge": 2, "vibrate": [200, 100],
            "actions": [{"action": "a1", "title": "Open", "behaviour": "https://x"}],
            "expiresAt": "2026-12-01T10:00:00Z", "somethingElse": {"kept": true}
        }));
        assert!(check_fields("", &ok, DATA_FIELDS).is_ok());
        for (body, field) in [
            (serde_json::json!({"title": 1}), "title"),
            (serde_json::json!({"ttl": -1}), "ttl"),
            (serde_json::json!({"ttl": "1h"}), "ttl"),
            (serde_json::json!({"expiresAt": "tomorrow"}), "expiresAt"),
            (
                serde_json::json!({"actions": [{"title": 3}]}),
                "actions[0].title",
            ),
            (serde_json::json!({"actions": ["x"]}), "actions[0]"),
            (serde_json::json!({"renotify": "yes"}), "renotify"),
        ] {
            match check_fields("", &object(body.clone()), DATA_FIELDS) {
                Err(ServiceError::BadRequest { field: got, .. }) => {
                    assert_eq!(got, field, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let raw = object(serde_json::json!({"chromium": {"dir": 5}}));
        assert!(check_fields("", &raw, RAW_FIELDS).is_ok());
        let inner = raw["chromium"].as_object().unwrap();
        assert!(matches!(
            check_fields("chromium.", inner, RAW_BROWSER_FIELDS),
            Err(ServiceError::BadRequest { field, .. }) if field == "chromium.dir"
        ));
    }
}
