//! A real HTTP webhook receiver for tests: a warp server on `127.0.0.1:0` that records
//! every POST (its `X-Herald-Signature` and body, when it came), can be told to answer the
//! next requests with a failure (500, or any status with a `Retry-After`; so it also stands
//! in for a push service answering 429/5xx) or to hold them unanswered, delays its answers if asked, and counts how
//! many requests it had in flight at once. Stopped when dropped. Plus `verify`, an
//! independent check of a signature with the `hmac` crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use warp::Filter;
use warp::http::StatusCode;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: Option<String>,
    pub content_type: Option<String>,
    /// Every header of the request.
    pub headers: warp::http::HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
    /// The status it answered (`None` while held).
    pub answered: Option<u16>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<Received>,
    /// Answer the next this many with `fail_status` (500 unless set) and `retry_after`.
    fail_next: usize,
    fail_status: Option<u16>,
    retry_after: Option<String>,
    /// Hold the next this many without answering.
    hold_next: usize,
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

/// The receiver; its URL is `url`.
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let route = warp::post()
            .and(warp::header::optional::<String>("x-herald-signature"))
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(move |signature, content_type, headers, body| {
                let state = shared.clone();
                async move { handle(state, signature, content_type, headers, body).await }
            });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(warp::serve(route).incoming(listener).run());
        Receiver { url, state, server }
    }

    /// Its `host:port`, e.g. for a `tls::TlsFront` in front of it.
    pub fn authority(&self) -> &str {
        let rest = self.url.trim_start_matches("http://");
        &rest[..rest.find('/').unwrap_or(rest.len())]
    }

    /// Answer the next `n` requests with 500.
    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Answer the next `n` requests with `status` and, if given, a `Retry-After` header.
    pub fn fail_next_with(&self, n: usize, status: u16, retry_after: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        s.fail_next = n;
        s.fail_status = Some(status);
        s.retry_after = retry_after.map(str::to_owned);
    }

    /// Hold the next `n` requests without ever answering.
    pub fn hold_next(&self, n: usize) {
        self.state.lock().unwrap().hold_next = n;
    }

    /// Answer each request only after `delay`.
    pub fn delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Most requests it had in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    /// The events of every request answered 2xx, in arrival order.
    pub fn accepted_events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .flat_map(|r| r.json()["messages"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    signature: Option<String>,
    content_type: Option<String>,
    headers: warp::http::HeaderMap,
    body: Bytes,
) -> warp::http::Response<String> {
    let (index, hold, fail, delay) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Received {
            signature,
            content_type,
            headers,
            body,
            at: std::time::Instant::now(),
            answered: None,
        });
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let hold = s.hold_next > 0;
        s.hold_next = s.hold_next.saturating_sub(usize::from(hold));
        let fail = !hold && s.fail_next > 0;
        s.fail_next = s.fail_next.saturating_sub(usize::from(fail));
        (s.requests.len() - 1, hold, fail, s.delay)
    };
    if hold {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(delay).await;
    let mut s = state.lock().unwrap();
    let status = if fail {
        s.fail_status.unwrap_or(500)
    } else {
        StatusCode::OK.as_u16()
    };
    s.requests[index].answered = Some(status);
    s.in_flight -= 1;
    let mut answer = warp::http::Response::builder().status(status);
    if fail && let Some(retry_after) = &s.retry_after {
        answer = answer.header("retry-after", retry_after.as_str());
    }
    answer
        .body(if fail { "failing" } else { "ok" }.to_owned())
        .unwrap()
}

/// Checks `X-Herald-Signature: t=<unix>,v1=<hex>` over `body` with `secret`, independently
/// of Herald's code; the timestamp.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> Result<i64, String> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => return Err(format!("unexpected part {part:?}")),
        }
    }
    let (t, v1) = t.zip(v1).ok_or("t= and v1= are required")?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if expected == v1 {
        Ok(t)
    } else {
        Err(format!("v1 {v1} is not {expected}"))
    }
}
