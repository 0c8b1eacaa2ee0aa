//! Conformance of `Templates`: content kept verbatim, per app, deleted once.

use crate::ids::AppId;
use crate::message::JsonText;
use crate::store::{Stores, Template};

/// Runs every check (on an empty store).
pub async fn run(s: &Stores) {
    let store = &s.templates;
    let app = AppId::parse("tpl").unwrap();
    let other = AppId::parse("tpl-other").unwrap();
    let t = Template {
        id: "t1".into(),
        content: JsonText::parse("{\"title\": \"Hi\",  \"data\": {\"k\": [1]}}").unwrap(),
        ttl: Some(60),
        created_us: 1_000,
    };
    assert_eq!(store.template(&app, "t1").await.unwrap(), None);
    store.create_template(&app, &t).await.unwrap();
    assert_eq!(store.template(&app, "t1").await.unwrap(), Some(t.clone()));
    assert_eq!(store.template(&other, "t1").await.unwrap(), None);
    let bare = Template {
        id: "t2".into(),
        ttl: None,
        ..t.clone()
    };
    store.create_template(&app, &bare).await.unwrap();
    assert_eq!(store.template(&app, "t2").await.unwrap(), Some(bare));
    assert!(!store.delete_template(&other, "t1").await.unwrap());
    assert!(store.delete_template(&app, "t1").await.unwrap());
    assert!(!store.delete_template(&app, "t1").await.unwrap());
    assert_eq!(store.template(&app, "t1").await.unwrap(), None);
}
