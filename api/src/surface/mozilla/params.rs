//! Request parameters and errors of the Mozilla-compatible API (SPEC §3).
//!
//! Parameters come from the query string and from the body, form-encoded or JSON (picked by
//! `Content-Type`; anything else is read as a form). A body value wins over a query value of
//! the same name. Every error uses the original service's shape:
//! `{"status": "error", "errors": [{"location", "name", "description"}]}`, and this file is
//! the one place that maps failures (validation, store) to HTTP statuses.

use std::collections::HashMap;

use bytes::Bytes;
use common::store::StoreError;
use serde::Serialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;

/// Where a parameter was (or should have been).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    Body,
    Querystring,
    Header,
    Path,
}

/// One entry of a Mozilla error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorEntry {
    pub location: Location,
    pub name: String,
    pub description: String,
}

/// An error response in the Mozilla shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MozError {
    pub status: StatusCode,
    pub errors: Vec<ErrorEntry>,
    /// The request body was left unread, so the server closes the connection after this
    /// answer; saying so keeps clients from reusing it.
    pub close: bool,
}

impl MozError {
    pub fn new(status: StatusCode, location: Location, name: &str, description: &str) -> MozError {
        MozError {
            status,
            errors: vec![ErrorEntry {
                location,
                name: name.into(),
                description: description.into(),
            }],
            close: false,
        }
    }

    /// The same error, answered with `Connection: close`.
    pub fn closing(self) -> MozError {
        MozError {
            close: true,
            ..self
        }
    }

    pub fn bad_request(location: Location, name: &str, description: &str) -> MozError {
        MozError::new(StatusCode::BAD_REQUEST, location, name, description)
    }

    pub fn not_found(location: Location, name: &str, description: &str) -> MozError {
        MozError::new(StatusCode::NOT_FOUND, location, name, description)
    }

    /// 400 listing every missing parameter.
    pub fn missing(missing: Vec<(Location, &str)>) -> MozError {
        let errors = missing
            .into_iter()
            .map(|(location, name)| ErrorEntry {
                location,
                name: name.into(),
                description: format!("Missing required argument: {name}"),
            })
            .collect();
        MozError {
            status: StatusCode::BAD_REQUEST,
            errors,
            close: false,
        }
    }

    /// The response, with `Retry-After` on 503 and `Connection: close` when asked.
    pub fn into_response(self) -> Response {
        use warp::Reply;
        use warp::http::header::{CONNECTION, HeaderValue, RETRY_AFTER};
        let body = serde_json::json!({"status": "error", "errors": self.errors});
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<StoreError> for MozError {
    fn from(e: StoreError) -> MozError {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                MozError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Location::Body,
                    "store",
                    "The store is temporarily unavailable; retry.",
                )
            }
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "store failure");
                MozError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Location::Body,
                    "store",
                    "Internal error.",
                )
            }
        }
    }
}

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params {
    body: HashMap<String, Value>,
    query: HashMap<String, String>,
}

impl Params {
    /// Parses the query string and the body according to `content_type`.
    pub fn parse(
        query: &str,
        content_type: Option<&str>,
        body: &Bytes,
    ) -> Result<Params, MozError> {
        let query = parse_form(query.as_bytes()).map_err(|_| {
            MozError::bad_request(
                Location::Querystring,
                "querystring",
                "Malformed query string.",
            )
        })?;
        let is_json = content_type.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        });
        let body = if body.is_empty() {
            HashMap::new()
        } else if is_json {
            parse_json_object(body)?
        } else {
            parse_form(body)
                .map_err(|_| MozError::bad_request(Location::Body, "body", "Malformed form body."))?
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        };
        Ok(Params { body, query })
    }

    /// A string parameter; empty strings count as absent. Non-strings are a 400.
    pub fn string(&self, name: &str) -> Result<Option<String>, MozError> {
        let value = match self.body.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => self.query.get(name).cloned(),
            Some(_) => {
                return Err(MozError::bad_request(
                    Location::Body,
                    name,
                    &format!("`{name}` must be a string."),
                ));
            }
        };
        Ok(value.filter(|s| !s.is_empty()))
    }

    /// A float parameter, given as a JSON number or a numeric string.
    pub fn float(&self, name: &str) -> Result<Option<f64>, MozError> {
        let (text, location) = match self.body.get(name) {
            Some(Value::Number(n)) => return Ok(n.as_f64()),
            Some(Value::String(s)) => (s.clone(), Location::Body),
            Some(Value::Null) | None => match self.query.get(name) {
                Some(s) => (s.clone(), Location::Querystring),
                None => return Ok(None),
            },
            Some(_) => (String::new(), Location::Body),
        };
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| {
                MozError::bad_request(location, name, &format!("`{name}` must be a float."))
            })
    }

    /// Where a parameter of this name was found (for error locations); `body` when absent.
    pub fn location_of(&self, name: &str) -> Location {
        if !self.body.contains_key(name) && self.query.contains_key(name) {
            Location::Querystring
        } else {
            Location::Body
        }
    }
}

fn parse_form(bytes: &[u8]) -> Result<HashMap<String, String>, serde_urlencoded::de::Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)?;
    let mut map = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        // The first occurrence wins, like most form decoders' `get`.
        map.entry(key).or_insert(value);
    }
    Ok(map)
}

fn parse_json_object(body: &Bytes) -> Result<HashMap<String, Value>, MozError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
        Ok(_) => Err(MozError::bad_request(
            Location::Body,
            "body",
            "Expected a JSON object.",
        )),
        Err(e) => Err(MozError::bad_request(
            Location::Body,
            "body",
            &format!("Invalid JSON: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str, content_type: Option<&str>, body: &str) -> Result<Params, MozError> {
        Params::parse(query, content_type, &Bytes::from(body.to_owned()))
    }

    #[test]
    fn reads_form_json_and_query_with_body_first() {
        let form = params("title=q&x=1", None, "title=b&body=hello%20there").unwrap();
        assert_eq!(form.string("title").unwrap().as_deref(), Some("b"));
        assert_eq!(form.string("body").unwrap().as_deref(), Some("hello there"));
        assert_eq!(form.string("x").unwrap().as_deref(), Some("1"));
        assert_eq!(form.location_of("x"), Location::Querystring);
        let json = params(
            "",
            Some("application/json; charset=utf-8"),
            r#"{"title":"t","timestamp":1.5}"#,
        )
        .unwrap();
        assert_eq!(json.string("title").unwrap().as_deref(), Some("t"));
        assert_eq!(json.float("timestamp").unwrap(), Some(1.5));
        assert_eq!(json.string("missing").unwrap(), None);
    }

    #[test]
    fn empty_strings_are_absent() {
        let p = params("", None, "token=&domain=x").unwrap();
        assert_eq!(p.string("token").unwrap(), None);
    }

    #[test]
    fn type_errors_name_the_field() {
        let p = params(
            "",
            Some("application/json"),
            r#"{"title": 3, "timestamp": "soon"}"#,
        )
        .unwrap();
        let e = p.string("title").unwrap_err();
        assert_eq!(
            (e.status, e.errors[0].name.as_str()),
            (StatusCode::BAD_REQUEST, "title")
        );
        let e = p.float("timestamp").unwrap_err();
        assert_eq!(e.errors[0].description, "`timestamp` must be a float.");
        assert_eq!(
            params("", None, "timestamp=1e400")
                .unwrap()
                .float("timestamp")
                .unwrap_err()
                .errors[0]
                .name,
            "timestamp"
        );
    }

    #[test]
    fn malformed_bodies_are_400_naming_body() {
        for (ct, body) in [
            (Some("application/json"), "{"),
            (Some("application/json"), "[1]"),
        ] {
            let e = params("", ct, body).unwrap_err();
            assert_eq!(
                (e.status, e.errors[0].name.as_str()),
                (StatusCode::BAD_REQUEST, "body")
            );
        }
    }

    #[test]
    fn missing_lists_every_name() {
        let e = MozError::missing(vec![(Location::Body, "token"), (Location::Body, "domain")]);
        assert_eq!(e.errors.len(), 2);
        assert_eq!(e.errors[1].description, "Missing required argument: domain");
    }
}
