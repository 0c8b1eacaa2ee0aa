//! `POST /graphql`: the Socrate WebSockets Service API (SPEC §5 Socrate, seed `004_…`) —
//! queries `version`, `messages(filter, nextToken)`, `globalMessages(filter, nextToken)`;
//! mutations `registerRecipient(input)`, `pushMessage(input)` (one `{item, error}` per
//! recipient), `pushGlobalMessage(input)` — executed by `async-graphql` on the same service
//! layer as `/api/v1` (no logic of its own beyond mapping types). Its SDL is
//! `docs/graphql.schema.graphql`, kept equal to `schema().sdl()` by a test.
//!
//! Authentication: `x-api-key: <secret>` (or `Authorization: Bearer`); a missing or unknown
//! key is HTTP 401, over the key's rate 429, both with a GraphQL `errors` body. Each root
//! field needs its Socrate scope — `websockets-manager-api:query:<field>` or
//! `websockets-manager-api:mutation:<field>` (so `…:query:*` / `…:mutation:*` grant all) —
//! or the equivalent Herald scope (`messages:read`, `messages:send`, `tokens:create`); a
//! field the key may not use resolves to `null` with an error whose
//! `extensions.code` is `FORBIDDEN`. Bad input is an error with `extensions.code`
//! `BAD_USER_INPUT` and `extensions.field` naming it.

use std::sync::Arc;

use async_graphql::{
    Context, EmptySubscription, Enum, ErrorExtensions, ID, InputObject, InputValueError,
    InputValueResult, Object, Scalar, ScalarType, Schema, SimpleObject, Value,
};
use common::clock::{parse_rfc3339, rfc3339};
use common::ids::{AppId, UserId};
use common::store::{
    AddressedMessage, BroadcastFilter, GlobalMessage, MessageBody, MessageFilter, MessageStatus,
};
use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::{BodyError, Request, Surface};
use crate::AppState;
use crate::service::ServiceError;
use crate::service::broadcasts::BroadcastSend;
use crate::service::messages::{Content, Recipient, Send};
use crate::service::tokens::TokenRequest;
use crate::surface::v1::messages::{self as v1_messages, parse_next_token};

/// Items per page of `messages` and `globalMessages` (Socrate takes no limit).
const PAGE: usize = 100;

/// The executable schema.
pub type SocrateSchema = Schema<Query, Mutation, EmptySubscription>;

/// Builds the schema (once per process).
pub fn schema() -> SocrateSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(16)
        .limit_complexity(2_000)
        .finish()
}

/// Who is calling, for the resolvers.
struct Caller {
    state: Arc<AppState>,
    app: AppId,
    key: String,
}

/// An error with `extensions.code` (and `extensions.field`).
fn gql_error(code: &'static str, message: String, field: Option<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| {
        e.set("code", code);
        if let Some(field) = &field {
            e.set("field", field.as_str());
        }
    })
}

fn service_error(e: ServiceError) -> async_graphql::Error {
    match e {
        ServiceError::BadRequest { field, message } => {
            gql_error("BAD_USER_INPUT", format!("{field}: {message}"), Some(field))
        }
        ServiceError::Forbidden(m) => gql_error("FORBIDDEN", m, None),
        ServiceError::NotFound { message, .. } => gql_error("NOT_FOUND", message, None),
        ServiceError::Conflict(m) => gql_error("CONFLICT", m, None),
        ServiceError::Unavailable(m) => gql_error("UNAVAILABLE", m, None),
        ServiceError::Internal(m) => gql_error("INTERNAL", m, None),
    }
}

fn bad_input(field: &str, message: &str) -> async_graphql::Error {
    gql_error(
        "BAD_USER_INPUT",
        format!("{field}: {message}"),
        Some(field.to_owned()),
    )
}

/// The caller, provided its key may use root field `field` of `kind` (`query` or
/// `mutation`), through the Socrate scope or the Herald one.
fn allowed<'c>(
    ctx: &'c Context<'_>,
    kind: &str,
    field: &str,
    herald: &str,
) -> async_graphql::Result<&'c Caller> {
    let caller = ctx.data::<Caller>()?;
    let key = caller
        .state
        .services
        .apps
        .app(caller.app.as_str())
        .and_then(|a| a.key(&caller.key))
        .ok_or_else(|| gql_error("UNAUTHENTICATED", "The API key is gone.".into(), None))?;
    let socrate = format!("websockets-manager-api:{kind}:{field}");
    if key.allows(&socrate) || key.allows(herald) {
        Ok(caller)
    } else {
        Err(gql_error(
            "FORBIDDEN",
            format!("The API key lacks the {socrate} scope."),
            None,
        ))
    }
}

/// `DateTime`: RFC 3339 in UTC; a value without a zone is read as UTC
/// (`2023-07-18T15:00:00`), as Socrate does.
#[derive(Debug, Clone, Copy)]
pub struct DateTime(i64);

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => parse_rfc3339(s)
                .map(DateTime)
                .ok_or_else(|| InputValueError::custom("must be an RFC 3339 date-time")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(rfc3339(self.0))
    }
}

/// `Token`: a connection token (a JWT), opaque to clients.
#[derive(Debug, Clone)]
pub struct Token(String);

#[Scalar(name = "Token")]
impl ScalarType for Token {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(Token(s)),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

/// A message's delivery status.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "MessageStatus", rename_items = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Delivered,
    Cancelled,
    Expired,
}

impl From<MessageStatus> for Status {
    fn from(s: MessageStatus) -> Status {
        match s {
            MessageStatus::Pending => Status::Pending,
            MessageStatus::Delivered => Status::Delivered,
            MessageStatus::Cancelled => Status::Cancelled,
            MessageStatus::Expired => Status::Expired,
        }
    }
}

/// The text of a body: Socrate's message string, or the JSON text of `data`.
fn text(body: &MessageBody) -> String {
    match body {
        MessageBody::Text(text) => text.clone(),
        MessageBody::Data(data) => data.text().to_owned(),
    }
}

/// A message pushed to one recipient.
#[derive(SimpleObject)]
pub struct Message {
    id: ID,
    recipient: String,
    message: Option<String>,
    topic: Option<String>,
    status: Status,
    expires_at: Option<DateTime>,
    created_at: DateTime,
    delivered_at: Option<DateTime>,
    cancelled_at: Option<DateTime>,
    global_message_id: Option<ID>,
}

impl From<&AddressedMessage> for Message {
    fn from(m: &AddressedMessage) -> Message {
        Message {
            id: ID(m.id.clone()),
            recipient: m.recipient.as_str().to_owned(),
            message: Some(text(&m.body)),
            topic: m.topic.clone(),
            status: m.status.into(),
            expires_at: m.expires_us.map(DateTime),
            created_at: DateTime(m.created_us),
            delivered_at: m.delivered_us.map(DateTime),
            cancelled_at: m.cancelled_us.map(DateTime),
            global_message_id: m.global_message_id.clone().map(ID),
        }
    }
}

/// A message pushed globally.
#[derive(SimpleObject)]
#[graphql(name = "GlobalMessage")]
pub struct Global {
    id: ID,
    message: Option<String>,
    topic: Option<String>,
    expires_at: Option<DateTime>,
    created_at: DateTime,
}

impl From<&GlobalMessage> for Global {
    fn from(m: &GlobalMessage) -> Global {
        Global {
            id: ID(m.id.clone()),
            message: Some(text(&m.body)),
            topic: m.topic.clone(),
            expires_at: m.expires_us.map(DateTime),
            created_at: DateTime(m.created_us),
        }
    }
}

/// A date range; `from` and `to` are RFC 3339 strings.
#[derive(InputObject, Default)]
pub struct DateTimeFilter {
    from: Option<String>,
    to: Option<String>,
}

impl DateTimeFilter {
    fn range(
        filter: Option<&DateTimeFilter>,
        field: &str,
    ) -> async_graphql::Result<(Option<i64>, Option<i64>)> {
        let Some(f) = filter else {
            return Ok((None, None));
        };
        let bound = |value: &Option<String>, end: &str| {
            value
                .as_deref()
                .map(|v| {
                    parse_rfc3339(v).ok_or_else(|| {
                        bad_input(
                            &format!("filter.{field}.{end}"),
                            "must be an RFC 3339 date-time",
                        )
                    })
                })
                .transpose()
        };
        Ok((bound(&f.from, "from")?, bound(&f.to, "to")?))
    }
}

#[derive(InputObject, Default)]
pub struct MessagesFilter {
    recipient: Option<String>,
    global_message_id: Option<ID>,
    created_at: Option<DateTimeFilter>,
    expires_at: Option<DateTimeFilter>,
    topic: Option<String>,
}

#[derive(InputObject, Default)]
pub struct GlobalMessagesFilter {
    created_at: Option<DateTimeFilter>,
    expires_at: Option<DateTimeFilter>,
    topic: Option<String>,
}

#[derive(SimpleObject)]
pub struct MessagesQueryResult {
    items: Vec<Message>,
    next_token: Option<String>,
}

#[derive(SimpleObject)]
pub struct GlobalMessagesQueryResult {
    items: Vec<Global>,
    next_token: Option<String>,
}

#[derive(InputObject)]
pub struct RegisterRecipientInput {
    recipient: String,
    source_ip: Option<String>,
    origin: Option<String>,
    topic: Option<String>,
}

#[derive(SimpleObject)]
pub struct RegisterRecipientResponse {
    token: Token,
    connection_uri: Option<String>,
}

#[derive(InputObject)]
pub struct MessageInput {
    recipients: Vec<String>,
    message: String,
    topic: Option<String>,
    expires_at: Option<DateTime>,
}

#[derive(InputObject)]
pub struct GlobalMessageInput {
    message: String,
    topic: Option<String>,
    expires_at: Option<DateTime>,
}

/// Why a recipient of `pushMessage` got no message.
#[derive(SimpleObject)]
pub struct MessageError {
    message: String,
}

/// One recipient's outcome of `pushMessage`.
#[derive(SimpleObject)]
pub struct PushMessageResult {
    item: Option<Message>,
    error: Option<MessageError>,
}

fn cursor(next: Option<String>) -> async_graphql::Result<Option<common::store::ListCursor>> {
    next.map(|t| {
        parse_next_token(&t).ok_or_else(|| bad_input("nextToken", "is not a token this API gave"))
    })
    .transpose()
}

pub struct Query;

#[Object]
impl Query {
    /// The API version.
    async fn version(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        allowed(ctx, "query", "version", "messages:read")?;
        Ok(env!("CARGO_PKG_VERSION").to_owned())
    }

    /// Messages pushed to recipients, newest first.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        filter: Option<MessagesFilter>,
        next_token: Option<String>,
    ) -> async_graphql::Result<MessagesQueryResult> {
        let caller = allowed(ctx, "query", "messages", "messages:read")?;
        let f = filter.unwrap_or_default();
        let filter = MessageFilter {
            recipient: f
                .recipient
                .map(|r| {
                    UserId::parse(r).map_err(|e| bad_input("filter.recipient", &e.to_string()))
                })
                .transpose()?,
            topic: f.topic,
            status: None,
            global_message_id: f.global_message_id.map(|id| id.0),
            created: DateTimeFilter::range(f.created_at.as_ref(), "createdAt")?,
            expires: DateTimeFilter::range(f.expires_at.as_ref(), "expiresAt")?,
        };
        let after = cursor(next_token)?;
        let (items, next) = caller
            .state
            .services
            .list_messages(&caller.app, &filter, after.as_ref(), PAGE)
            .await
            .map_err(service_error)?;
        Ok(MessagesQueryResult {
            items: items.iter().map(Message::from).collect(),
            next_token: next.as_ref().map(v1_messages::next_token),
        })
    }

    /// Messages pushed globally, newest first.
    async fn global_messages(
        &self,
        ctx: &Context<'_>,
        filter: Option<GlobalMessagesFilter>,
        next_token: Option<String>,
    ) -> async_graphql::Result<GlobalMessagesQueryResult> {
        let caller = allowed(ctx, "query", "globalMessages", "messages:read")?;
        let f = filter.unwrap_or_default();
        let filter = BroadcastFilter {
            topic: f.topic,
            created: DateTimeFilter::range(f.created_at.as_ref(), "createdAt")?,
            expires: DateTimeFilter::range(f.expires_at.as_ref(), "expiresAt")?,
        };
        let after = cursor(next_token)?;
        let (items, next) = caller
            .state
            .services
            .list_broadcasts(&caller.app, &filter, after.as_ref(), PAGE)
            .await
            .map_err(service_error)?;
        Ok(GlobalMessagesQueryResult {
            items: items.iter().map(Global::from).collect(),
            next_token: next.as_ref().map(v1_messages::next_token),
        })
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// A connection token and URI for a recipient (`/?token=…` on the least loaded edge).
    async fn register_recipient(
        &self,
        ctx: &Context<'_>,
        input: RegisterRecipientInput,
    ) -> async_graphql::Result<RegisterRecipientResponse> {
        let caller = allowed(ctx, "mutation", "registerRecipient", "tokens:create")?;
        let user = UserId::parse(input.recipient)
            .map_err(|e| bad_input("input.recipient", &e.to_string()))?;
        let source_ip = input
            .source_ip
            .map(|ip| {
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| bad_input("input.sourceIp", "must be an IP address"))
            })
            .transpose()?;
        let request = TokenRequest {
            user: Some(user),
            channels: Vec::new(),
            topics: input.topic.into_iter().collect(),
            origin: input.origin,
            source_ip,
            ttl: None,
            publish: false,
            ack: false,
        };
        let services = &caller.state.services;
        let app = services
            .apps
            .app(caller.app.as_str())
            .ok_or_else(|| gql_error("UNAUTHENTICATED", "The app is gone.".into(), None))?;
        let key = app
            .key(&caller.key)
            .ok_or_else(|| gql_error("UNAUTHENTICATED", "The API key is gone.".into(), None))?;
        let minted = services
            .mint_token(common::auth::Caller { app, key }, request)
            .await
            .map_err(service_error)?;
        Ok(RegisterRecipientResponse {
            connection_uri: minted
                .edge
                .map(|edge| format!("{edge}/?token={}", minted.token)),
            token: Token(minted.token),
        })
    }

    /// Pushes a message to each recipient: one `{item, error}` per recipient, in order.
    async fn push_message(
        &self,
        ctx: &Context<'_>,
        input: MessageInput,
    ) -> async_graphql::Result<Vec<PushMessageResult>> {
        let caller = allowed(ctx, "mutation", "pushMessage", "messages:send")?;
        let order = input.recipients.clone();
        let send = Send {
            app: caller.app.clone(),
            recipients: input
                .recipients
                .into_iter()
                .map(|id| Recipient {
                    id,
                    foreign_id: None,
                })
                .collect(),
            content: Content::Body(MessageBody::Text(input.message)),
            topic: input.topic,
            expires_us: input.expires_at.map(|t| t.0),
        };
        let sent = crate::service::detached({
            let services = caller.state.services.clone();
            async move { services.send_messages(send).await }
        })
        .await
        .map_err(|e| service_error(prefix_input(e)))?;
        let mut items = sent.items.iter();
        let mut errors = sent.errors.iter();
        Ok(order
            .iter()
            .map(|recipient| match errors.clone().next() {
                Some((r, e)) if r == recipient => {
                    errors.next();
                    PushMessageResult {
                        item: None,
                        error: Some(MessageError { message: e.clone() }),
                    }
                }
                _ => PushMessageResult {
                    item: items.next().map(Message::from),
                    error: None,
                },
            })
            .collect())
    }

    /// Pushes a message to every connected recipient (with `topic`: those labelled with it).
    async fn push_global_message(
        &self,
        ctx: &Context<'_>,
        input: GlobalMessageInput,
    ) -> async_graphql::Result<Global> {
        let caller = allowed(ctx, "mutation", "pushGlobalMessage", "messages:send")?;
        let send = BroadcastSend {
            app: caller.app.clone(),
            content: Content::Body(MessageBody::Text(input.message)),
            topic: input.topic,
            expires_us: input.expires_at.map(|t| t.0),
        };
        let sent = crate::service::detached({
            let services = caller.state.services.clone();
            async move { services.broadcast(send).await }
        })
        .await
        .map_err(|e| service_error(prefix_input(e)))?;
        Ok(Global::from(&sent))
    }
}

/// A service error about a field of `input` names it as `input.<field>`.
fn prefix_input(e: ServiceError) -> ServiceError {
    match e {
        ServiceError::BadRequest { field, message } => ServiceError::BadRequest {
            field: format!("input.{field}"),
            message,
        },
        other => other,
    }
}

/// A transport-level refusal, in GraphQL's response shape.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

async fn execute(r: Request) -> Result<Response, Response> {
    let state = r.state.clone();
    let secret = super::presented_secret(&r.headers);
    let caller = secret
        .and_then(|s| state.services.apps.authenticate(s))
        .ok_or_else(|| {
            refusal(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "A valid API key is required (x-api-key).",
            )
        })?;
    state
        .rate_limit
        .check(&format!("{}/{}", caller.app.id, caller.key.name))
        .map_err(|retry| {
            let mut response = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "Too many requests for this API key.",
            );
            if let Ok(v) = warp::http::HeaderValue::from_str(&retry.to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
            response
        })?;
    let body = r.body.as_ref().map_err(|e| match e {
        BodyError::TooLarge { .. } => refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!(
                "The request body is larger than {} bytes.",
                state.max_body_bytes
            ),
        ),
        _ => refusal(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "The request body could not be read.",
        ),
    })?;
    let request: async_graphql::Request = serde_json::from_slice(body).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &format!("body: not a GraphQL request ({e})"),
        )
    })?;
    let request = request.data(Caller {
        state: state.clone(),
        app: caller.app.id.clone(),
        key: caller.key.name.clone(),
    });
    let response = state.graphql.execute(request).await;
    Ok(warp::reply::json(&response).into_response())
}

/// `POST /graphql`.
pub fn routes(state: Arc<AppState>) -> Surface {
    let shape = super::Shape {
        wrong_method: || warp::reject::custom(WrongMethod),
        render: |response: Response| response,
    };
    let post = super::route(
        &state,
        shape,
        warp::http::Method::POST,
        &[],
        "graphql",
        |r| Box::pin(execute(r)),
    );
    warp::path("graphql")
        .and(post.recover(rejection).unify())
        .boxed()
}

#[derive(Debug)]
struct WrongMethod;
impl warp::reject::Reject for WrongMethod {}

async fn rejection(rejection: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    Ok(
        if rejection.find::<WrongMethod>().is_some()
            || rejection.find::<warp::reject::MethodNotAllowed>().is_some()
        {
            refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "BAD_REQUEST",
                "Use POST with a JSON GraphQL request.",
            )
        } else {
            refusal(StatusCode::NOT_FOUND, "NOT_FOUND", "No such endpoint.")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_sdl_is_the_served_schema() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/graphql.schema.graphql"
        );
        let documented = std::fs::read_to_string(path).unwrap_or_default();
        let served = schema().sdl();
        if documented != served {
            if std::env::var_os("HERALD_WRITE_SDL").is_some() {
                std::fs::write(path, &served).expect("write the SDL");
            } else {
                panic!(
                    "docs/graphql.schema.graphql differs from the served schema; \
                     run `HERALD_WRITE_SDL=1 cargo test -p api sdl` and review the diff"
                );
            }
        }
    }
}
