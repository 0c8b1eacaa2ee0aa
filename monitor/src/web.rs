//! The monitor's HTTP surface: `/status` (the last round as JSON), `/` (the same as small
//! HTML tables of edges and routers), `/health` (200 when the store answers), `/metrics`, `/version`.

use std::convert::Infallible;
use std::sync::Arc;

use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::{MonitorState, Snapshot};

pub(crate) fn routes(
    state: Arc<MonitorState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let ops = common::http::metrics_and_version(state.metrics.clone());
    let with_state = warp::any().map(move || state.clone());
    let status = warp::path!("status")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<MonitorState>| warp::reply::json(&snapshot(&state)).into_response());
    let page = warp::path::end()
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<MonitorState>| {
            warp::reply::html(render_html(&snapshot(&state))).into_response()
        });
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state)
        .then(health);
    status
        .or(page)
        .unify()
        .or(health)
        .unify()
        .or(ops)
        .unify()
        .recover(common::http::json_rejection)
        .unify()
}

fn snapshot(state: &MonitorState) -> Snapshot {
    state.snapshot.read().map(|s| s.clone()).unwrap_or_default()
}

async fn health(state: Arc<MonitorState>) -> Response {
    let (status, detail) = match state.store.probe().await {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let healthy = status == StatusCode::OK;
    let body = json!({"status": if healthy { "ok" } else { "unavailable" }, "store": detail});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render_html(snapshot: &Snapshot) -> String {
    let rows: String = snapshot
        .nodes
        .iter()
        .map(|n| {
            let check = n.last_check.as_ref().map_or("-".to_owned(), |c| match (&c.error, c.latency_ms) {
                (None, Some(ms)) => format!("ok, {ms:.1} ms"),
                (Some(e), _) => escape(e),
                _ => "-".into(),
            });
            let canary = n.last_check.as_ref().map_or("-".to_owned(), |c| match c.canary_ms {
                Some(ms) => format!("{ms:.1} ms"),
                None => c.canary.to_owned(),
            });
            format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td><td>{}</td></tr>",
                if n.healthy { "up" } else { "down" },
                escape(&n.id),
                escape(&n.url),
                if n.healthy { "healthy" } else { "down" },
                n.connections,
                n.heartbeat_age_ms,
                check,
                canary
            )
        })
        .collect();
    let routers: String = snapshot
        .routers
        .iter()
        .map(|r| {
            let state = match &r.error {
                None => "healthy".to_owned(),
                Some(e) => escape(e),
            };
            let number = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
            format!(
                "<tr class=\"{}\"><td>{}</td><td>{state}</td><td>{}</td><td>{}</td></tr>",
                if r.healthy { "up" } else { "down" },
                escape(&r.url),
                number(r.epoch),
                number(r.seq)
            )
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Herald status</title>\
         <meta http-equiv=\"refresh\" content=\"5\"><style>body{{font-family:sans-serif}}\
         td,th{{padding:4px 10px;text-align:left}}.up{{color:#060}}.down{{color:#a00}}</style></head>\
         <body><h1>Herald edges</h1><p>Store: <span id=\"store\">{}</span>. Last round at {}.</p><table id=\"nodes\">\
         <tr><th>node</th><th>url</th><th>state</th><th>sockets</th><th>heartbeat age</th><th>last check</th><th>canary</th></tr>\
         {rows}</table><h2>Routers</h2><table id=\"routers\">\
         <tr><th>url</th><th>state</th><th>epoch</th><th>sequence</th></tr>{routers}</table>\
         <p><a href=\"/status\">JSON</a> · <a href=\"/metrics\">metrics</a></p></body></html>",
        escape(&snapshot.store),
        common::clock::rfc3339(common::clock::secs_to_us(snapshot.round_at).unwrap_or(0))
    )
}
