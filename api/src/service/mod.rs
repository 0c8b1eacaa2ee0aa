//! The operations every surface shares (DESIGN.md §1): publish to a channel, send to a
//! user, mint a token, read presence, force logout, and the Mozilla queue operations. Each
//! takes typed, already-authorised input and returns a typed result or a `ServiceError`;
//! "persist, then publish, then answer" exists here once. Surfaces (`crate::surface`)
//! only parse, authorise, call and render, each in its own error shape.
//!
//! The edge uses the same `Services` for what its clients publish over their sockets.

use std::sync::Arc;

use common::auth::Apps;
use common::clock::now_us;
use common::store::{Alive, StoreError, Stores};

use crate::publisher::Publisher;

pub mod broadcasts;
pub mod buckets;
pub mod channels;
pub mod contexts;
pub mod messages;
pub mod nodes;
pub mod queues;
pub mod templates;
pub mod tokens;
pub mod users;
pub mod webhooks;
pub mod webpush;

/// Why an operation failed, in terms every surface can render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The input named by `field` is not acceptable.
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// `what` does not exist (or is not the caller's).
    #[error("{what}: {message}")]
    NotFound { what: &'static str, message: String },
    /// The resource is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The store (or another dependency) is unavailable: retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or corruption.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    pub fn bad_request(field: &str, message: impl Into<String>) -> ServiceError {
        ServiceError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::NotFound {
            what,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> ServiceError {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ServiceError::Unavailable("The store is temporarily unavailable; retry.".into())
            }
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "store failure");
                ServiceError::Internal("Internal error.".into())
            }
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// What the operations need: the stores, the way to the routers, the apps, settings.
#[derive(Clone)]
pub struct Services {
    pub stores: Stores,
    pub publisher: Publisher,
    pub apps: Arc<Apps>,
    pub settings: Arc<Settings>,
    /// Each app's VAPID key once read from the store (`vapid_key`).
    pub vapid_keys: Arc<
        std::sync::Mutex<std::collections::HashMap<common::ids::AppId, crate::webpush::VapidKey>>,
    >,
    /// Queues already read by the message path (`posting_queue`).
    pub queue_cache: Arc<queues::QueueCache>,
}

/// Settings the operations read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `api.public_url` without the trailing slash (queue URLs).
    pub api_base: String,
    /// An edge whose heartbeat is older than this is not offered, and its sockets do not
    /// count as present (µs).
    pub node_ttl_us: i64,
    /// Token lifetime when a request gives none, and the longest allowed (seconds).
    pub token_ttl_default: u64,
    pub token_ttl_max: u64,
    /// How long an offline recipient's message waits before its Web Push fallback (µs).
    pub webpush_delay_us: i64,
    /// Longest a PushPushGo bucket's event waits for a fuller callback batch (ms).
    pub bucket_callback_delay_ms: u64,
    /// How long a PushPushGo bucket can be used after it is created (µs).
    pub bucket_lifetime_us: i64,
}

impl Services {
    /// Which nodes count for presence now.
    pub fn alive(&self) -> Alive {
        Alive {
            heartbeat_after_us: now_us().saturating_sub(self.settings.node_ttl_us),
        }
    }
}

/// Runs a store write and the publish that must follow it on a task of its own: when a
/// client goes away mid-request its handler is dropped, and a committed write must still
/// be pushed.
pub async fn detached<T, F>(work: F) -> ServiceResult<T>
where
    T: Send + 'static,
    F: Future<Output = ServiceResult<T>> + Send + 'static,
{
    tokio::spawn(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a write task failed");
        Err(ServiceError::Internal("Internal error.".into()))
    })
}
