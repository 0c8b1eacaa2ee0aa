//! Force logout (SPEC §4 `DELETE /api/v1/users/{id}/connections`): the `Revocations`
//! concern. A user's "not before" time: connection tokens issued before it are refused.

use async_trait::async_trait;

use super::StoreResult;
use crate::ids::{AppId, UserId};

/// Per-user token revocation.
#[async_trait]
pub trait Revocations: Send + Sync + 'static {
    /// Refuses `user`'s tokens issued before `at_us` (the time only moves forward).
    async fn revoke_before(&self, app: &AppId, user: &UserId, at_us: i64) -> StoreResult<()>;
    /// The time before which `user`'s tokens are refused, if any.
    async fn not_before(&self, app: &AppId, user: &UserId) -> StoreResult<Option<i64>>;
}
