//! Conformance of `Contexts`: create, find, list per app in creation order.

use crate::ids::{AppId, ChannelName};
use crate::store::Stores;
use crate::store::contexts::Context;

/// Runs every check.
pub async fn run(s: &Stores) {
    let app = AppId::parse("vp").unwrap();
    let other = AppId::parse("vp-other").unwrap();
    let context = |id: &str, name: Option<&str>, created_us| Context {
        id: ChannelName::parse(id).unwrap(),
        name: name.map(Into::into),
        created_us,
    };
    let c = &s.contexts;
    assert!(c.contexts(&app).await.unwrap().is_empty());
    let first = context("ctx1", Some("lobby"), 20);
    let second = context("ctx2", None, 10);
    c.create_context(&app, &first).await.unwrap();
    c.create_context(&app, &second).await.unwrap();
    assert!(
        c.create_context(&app, &first).await.is_err(),
        "ids are unique"
    );
    assert_eq!(
        c.contexts(&app).await.unwrap(),
        [second.clone(), first.clone()]
    );
    assert_eq!(
        c.context(&app, &first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(c.context(&other, &first.id).await.unwrap(), None, "per app");
}
