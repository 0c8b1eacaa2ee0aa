//! `/api/v1` addressed messages (SPEC §4 Messages): `POST /messages`, `POST
//! /users/{id}/messages`, `GET /messages/{id}`, `POST /messages/{id}/cancel`, `GET
//! /messages` with filters and an opaque `nextToken`. The Message object is
//! `{id, recipient, foreignId?, message|data, topic?, status, createdAt, expiresAt?,
//! deliveredAt?, cancelledAt?, globalMessageId?}`.

use common::clock::{now_us, parse_rfc3339, rfc3339};
use common::ids::UserId;
use common::message::JsonText;
use common::store::{AddressedMessage, ListCursor, MessageBody, MessageFilter, MessageStatus};
use serde_json::{Value, json};

use super::{ApiError, Outcome, Request, V1Request, created, ok};
use crate::service::messages::{Content, MAX_TTL, Recipient, Send, Sent};
use crate::surface::json::JsonObject;

/// Default and largest page of a listing.
pub(super) const DEFAULT_LIMIT: usize = 20;
pub(super) const MAX_LIMIT: usize = 100;

/// The Message object.
pub fn message_json(m: &AddressedMessage) -> Value {
    let mut item = json!({
        "id": m.id,
        "recipient": m.recipient,
        "status": m.status.as_str(),
        "createdAt": rfc3339(m.created_us),
    });
    match &m.body {
        MessageBody::Text(text) => item["message"] = json!(text),
        MessageBody::Data(data) => item["data"] = data.value(),
    }
    let optional = [
        ("foreignId", m.foreign_id.clone().map(Value::String)),
        ("topic", m.topic.clone().map(Value::String)),
        ("expiresAt", m.expires_us.map(|t| json!(rfc3339(t)))),
        ("deliveredAt", m.delivered_us.map(|t| json!(rfc3339(t)))),
        ("deliveredVia", m.delivered_via.map(|v| json!(v.as_str()))),
        ("cancelledAt", m.cancelled_us.map(|t| json!(rfc3339(t)))),
        (
            "globalMessageId",
            m.global_message_id.clone().map(Value::String),
        ),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item[name] = value;
        }
    }
    item
}

fn sent_json(sent: &Sent) -> Value {
    let items: Vec<Value> = sent.items.iter().map(message_json).collect();
    let errors: Vec<Value> = sent
        .errors
        .iter()
        .map(|(recipient, error)| json!({"recipient": recipient, "error": error}))
        .collect();
    json!({"items": items, "errors": errors})
}

/// The recipients of `POST /messages`: user ids, or `{"id", "foreignId"?}` objects.
fn recipients(body: &JsonObject) -> Result<Vec<Recipient>, ApiError> {
    let Some(value) = body.value("recipients") else {
        return Err(ApiError::bad_request("recipients", "is required"));
    };
    let Value::Array(items) = value else {
        return Err(ApiError::bad_request("recipients", "must be an array"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(id) => Ok(Recipient {
                id: id.clone(),
                foreign_id: None,
            }),
            Value::Object(fields) => {
                let field = |name: &str| format!("recipients[{i}].{name}");
                let id = match fields.get("id") {
                    Some(Value::String(id)) => id.clone(),
                    _ => return Err(ApiError::bad_request(&field("id"), "must be a string")),
                };
                let foreign_id = match fields.get("foreignId") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(f)) => Some(f.clone()),
                    Some(_) => {
                        return Err(ApiError::bad_request(
                            &field("foreignId"),
                            "must be a string",
                        ));
                    }
                };
                Ok(Recipient { id, foreign_id })
            }
            _ => Err(ApiError::bad_request(
                &format!("recipients[{i}]"),
                "must be a user id or {\"id\", \"foreignId\"}",
            )),
        })
        .collect()
}

/// The content, topic and expiry of a send: exactly one of `message`, `data`, `template`.
pub(super) fn content(
    body: &JsonObject,
) -> Result<(Content, Option<String>, Option<i64>), ApiError> {
    let message = body.string("message")?;
    let data = body.value("data").cloned();
    let template = body.string("template")?;
    let content = match (message, data, template) {
        (Some(text), None, None) => Content::Body(MessageBody::Text(text)),
        (None, Some(data), None) => Content::Body(MessageBody::Data(JsonText::from(data))),
        (None, None, Some(id)) => Content::Template(id),
        (None, None, None) => {
            return Err(ApiError::bad_request(
                "message",
                "one of message, data or template is required",
            ));
        }
        (_, _, Some(_)) => {
            return Err(ApiError::bad_request(
                "template",
                "give one of message, data or template",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "data",
                "give one of message, data or template",
            ));
        }
    };
    let topic = body.string("topic")?;
    let expires_at = body.parsed("expiresAt", |s| {
        parse_rfc3339(&s).ok_or("must be an RFC 3339 timestamp")
    })?;
    let ttl = body.u64("ttl")?;
    let expires_us = match (expires_at, ttl) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "ttl",
                "give expiresAt or ttl, not both",
            ));
        }
        (Some(at), None) => Some(at),
        (None, Some(0)) => return Err(ApiError::bad_request("ttl", "must be at least 1")),
        (None, Some(ttl)) if ttl > MAX_TTL => {
            return Err(ApiError::bad_request(
                "ttl",
                &format!("must be at most {MAX_TTL} seconds"),
            ));
        }
        (None, Some(ttl)) => Some(now_us().saturating_add((ttl as i64).saturating_mul(1_000_000))),
        (None, None) => None,
    };
    Ok((content, topic, expires_us))
}

/// `POST /api/v1/messages` `{recipients, message|data, topic?, expiresAt?|ttl?}`.
pub async fn send(r: Request) -> Outcome {
    let caller = r.authorize("messages:send")?;
    let body = r.json()?;
    let recipients = recipients(&body)?;
    let (content, topic, expires_us) = content(&body)?;
    let send = Send {
        app: caller.app.id.clone(),
        recipients,
        content,
        topic,
        expires_us,
    };
    created(sent_json(&r.state.services.send_messages(send).await?))
}

/// `POST /api/v1/users/{id}/messages`: a send to that one recipient.
pub async fn send_to_user(r: Request) -> Outcome {
    let caller = r.authorize("messages:send")?;
    let user = r.user()?;
    let body = r.json()?;
    let (content, topic, expires_us) = content(&body)?;
    let send = Send {
        app: caller.app.id.clone(),
        recipients: vec![Recipient {
            id: user.as_str().to_owned(),
            foreign_id: None,
        }],
        content,
        topic,
        expires_us,
    };
    created(sent_json(&r.state.services.send_messages(send).await?))
}

/// `GET /api/v1/messages/{id}`.
pub async fn get(r: Request) -> Outcome {
    let caller = r.authorize("messages:read")?;
    let message = r
        .state
        .services
        .addressed_message(&caller.app.id, r.segment(0))
        .await?;
    ok(message_json(&message))
}

/// `POST /api/v1/messages/{id}/cancel`: 200 with the message, now `CANCELLED`; 409
/// unless it was `PENDING`.
pub async fn cancel(r: Request) -> Outcome {
    let caller = r.authorize("messages:send")?;
    let message = r
        .state
        .services
        .cancel_message(&caller.app.id, r.segment(0))
        .await?;
    ok(message_json(&message))
}

/// Query parameter `name`.
pub(super) fn query_param(r: &Request, name: &str) -> Result<Option<String>, ApiError> {
    r.query_param(name)
        .map_err(|_| ApiError::bad_request("query", "is not a valid query string"))
}

/// Query parameter `name` as an RFC 3339 time (µs).
pub(super) fn query_time(r: &Request, name: &str) -> Result<Option<i64>, ApiError> {
    query_param(r, name)?
        .map(|v| {
            parse_rfc3339(&v)
                .ok_or_else(|| ApiError::bad_request(name, "must be an RFC 3339 timestamp"))
        })
        .transpose()
}

/// The `nextToken` query parameter.
pub(super) fn query_cursor(r: &Request) -> Result<Option<ListCursor>, ApiError> {
    query_param(r, "nextToken")?
        .map(|t| {
            parse_next_token(&t)
                .ok_or_else(|| ApiError::bad_request("nextToken", "is not a token this API gave"))
        })
        .transpose()
}

/// An opaque page token: the last item's creation time and id, as hex.
pub(crate) fn next_token(cursor: &ListCursor) -> String {
    format!("{:016x}{}", cursor.created_us, cursor.id)
}

pub(crate) fn parse_next_token(token: &str) -> Option<ListCursor> {
    if token.len() != 48 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let created_us = i64::from_str_radix(&token[..16], 16).ok()?;
    Some(ListCursor {
        created_us,
        id: token[16..].to_owned(),
    })
}

/// `GET /api/v1/messages?recipient=&topic=&status=&globalMessageId=&createdFrom=&createdTo=
/// &expiresFrom=&expiresTo=&limit=&nextToken=` → `{items, nextToken}`, newest first.
pub async fn list(r: Request) -> Outcome {
    let caller = r.authorize("messages:read")?;
    let param = |name: &str| query_param(&r, name);
    let time = |name: &str| query_time(&r, name);
    let filter = MessageFilter {
        recipient: param("recipient")?
            .map(|v| {
                UserId::parse(v).map_err(|e| ApiError::bad_request("recipient", &e.to_string()))
            })
            .transpose()?,
        topic: param("topic")?,
        status: param("status")?
            .map(|v| {
                MessageStatus::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(
                        "status",
                        "must be one of PENDING, DELIVERED, CANCELLED, EXPIRED",
                    )
                })
            })
            .transpose()?,
        global_message_id: param("globalMessageId")?,
        created: (time("createdFrom")?, time("createdTo")?),
        expires: (time("expiresFrom")?, time("expiresTo")?),
    };
    let limit = r.query_limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let cursor = query_cursor(&r)?;
    let (items, next) = r
        .state
        .services
        .list_messages(&caller.app.id, &filter, cursor.as_ref(), limit)
        .await?;
    let items: Vec<Value> = items.iter().map(message_json).collect();
    ok(json!({"items": items, "nextToken": next.as_ref().map(next_token)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_tokens_round_trip_and_refuse_forgeries() {
        let cursor = ListCursor {
            created_us: 1_700_000_000_123_456,
            id: "0190a1b2c3d4e5f60718293a4b5c6d7e".into(),
        };
        assert_eq!(parse_next_token(&next_token(&cursor)), Some(cursor));
        for forged in ["", "abc", &"g".repeat(48), &"0".repeat(47)] {
            assert_eq!(parse_next_token(forged), None, "{forged}");
        }
    }
}
