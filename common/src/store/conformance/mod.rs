//! The store conformance suite: the behaviour every backend must share, one module per
//! concern, written once against the traits and run by each backend's tests on a real
//! instance (`run_all` on an empty store).

use super::Stores;

pub(crate) mod broadcasts;
pub(crate) mod buckets;
pub(crate) mod channels;
pub(crate) mod contexts;
pub(crate) mod messages;
pub(crate) mod nodes;
pub(crate) mod presence;
pub(crate) mod queues;
pub(crate) mod revocations;
pub(crate) mod templates;
pub(crate) mod webhooks;
pub(crate) mod webpush;

/// Runs every concern's checks against `stores` (which must be empty).
pub async fn run_all(stores: Stores) {
    stores.probe().await.expect("probe");
    queues::run(&stores).await;
    channels::run(&stores).await;
    messages::run(&stores).await;
    webhooks::run(&stores).await;
    templates::run(&stores).await;
    broadcasts::run(&stores).await;
    contexts::run(&stores).await;
    webpush::run(&stores).await;
    buckets::run(&stores).await;
    revocations::run(&stores).await;
    nodes::run(&stores).await;
    presence::run(&stores).await;
}
