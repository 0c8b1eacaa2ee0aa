//! Operational endpoints of the API: `/health` (200 only when the store answers and at
//! least one router socket is live, else 503 naming the failing part), `/version`,
//! `/metrics`, and `/openapi.json` (the OpenAPI 3 document of every HTTP surface, kept
//! true by a test that checks real responses against it).

use std::sync::Arc;

use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::AppState;

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let ops = common::http::metrics_and_version(state.metrics.clone());
    let with_state = warp::any().map(move || state.clone());
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state)
        .then(health);
    let openapi = warp::path!("openapi.json").and(warp::get()).map(|| {
        warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response()
    });
    health.or(ops).unify().or(openapi).unify()
}

/// The OpenAPI 3 document (`api/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn health(state: Arc<AppState>) -> Response {
    let services = &state.services;
    let store = services.stores.probe().await;
    let connected = services.publisher.connected();
    let healthy = store.is_ok() && connected > 0;
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "pid": std::process::id(),
        "store": store.err().unwrap_or_else(|| "ok".into()),
        "routers": {"connected": connected, "configured": services.publisher.configured()},
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
