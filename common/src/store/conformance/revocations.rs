//! Conformance of `Revocations`: a user's not-before time only moves forward.

use crate::ids::{AppId, UserId};
use crate::store::Stores;

/// Runs every check.
pub async fn run(s: &Stores) {
    let app = AppId::parse("rev").unwrap();
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    let r = &s.revocations;
    assert_eq!(r.not_before(&app, &alice).await.unwrap(), None);
    r.revoke_before(&app, &alice, 100).await.unwrap();
    assert_eq!(r.not_before(&app, &alice).await.unwrap(), Some(100));
    r.revoke_before(&app, &alice, 50).await.unwrap();
    assert_eq!(
        r.not_before(&app, &alice).await.unwrap(),
        Some(100),
        "never back"
    );
    r.revoke_before(&app, &alice, 200).await.unwrap();
    assert_eq!(r.not_before(&app, &alice).await.unwrap(), Some(200));
    assert_eq!(r.not_before(&app, &bob).await.unwrap(), None);
    let other = AppId::parse("other").unwrap();
    assert_eq!(r.not_before(&other, &alice).await.unwrap(), None, "per app");
}
