//! Apps and their API keys (SPEC §2, §4 Authentication): the registry built from the
//! `[[apps]]` configuration, the lookup of a presented secret, and scopes.
//!
//! A secret is looked up by its SHA-256 digest and then compared in constant time, so the
//! lookup costs the same whichever key matches and how much of it does. Scopes are
//! `resource:action` strings (`messages:send`, `channels:*`, `*:*`); a `*` part matches any
//! one part, and a `*` that ends a key's scope matches every part left (so `*:*` also
//! grants Socrate's three-part `websockets-manager-api:query:messages`).

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AppConfig;
use crate::ids::AppId;

/// One API key of an app.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    secret: String,
    scopes: Vec<String>,
}

impl ApiKey {
    /// The secret: signs this key's connection tokens.
    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// True when one of the key's scopes grants `required` (e.g. `channels:write`).
    pub fn allows(&self, required: &str) -> bool {
        self.scopes
            .iter()
            .any(|scope| scope_grants(scope, required))
    }
}

/// An app (tenant) with its keys.
#[derive(Debug, Clone)]
pub struct App {
    pub id: AppId,
    /// The public key (Thunderpush's `apikey` in URLs and `CONNECT`).
    pub public_key: String,
    /// Thunderpush clients may `CONNECT` with a bare user id instead of a Herald token.
    pub trust_user_ids: bool,
    pub keys: Vec<ApiKey>,
}

impl App {
    /// The key named `name` (a connection token's `kid`).
    pub fn key(&self, name: &str) -> Option<&ApiKey> {
        self.keys.iter().find(|k| k.name == name)
    }
}

/// Who is calling: an app and the key that authenticated the request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub app: &'a App,
    pub key: &'a ApiKey,
}

/// Every app of the cluster.
#[derive(Debug, Default)]
pub struct Apps {
    apps: Vec<App>,
    /// SHA-256 of a secret → (app, key) index.
    by_digest: HashMap<[u8; 32], (usize, usize)>,
}

impl Apps {
    /// The registry of a (validated) configuration.
    pub fn from_config(config: &[AppConfig]) -> Apps {
        let mut apps = Apps::default();
        for app in config {
            let Ok(id) = AppId::parse(&app.id) else {
                continue;
            };
            let keys = app
                .keys
                .iter()
                .map(|k| ApiKey {
                    name: k.name.clone(),
                    secret: k.secret.clone(),
                    scopes: k.scopes.clone(),
                })
                .collect::<Vec<_>>();
            for (j, key) in keys.iter().enumerate() {
                apps.by_digest
                    .insert(digest(&key.secret), (apps.apps.len(), j));
            }
            apps.apps.push(App {
                id,
                public_key: app.key.clone(),
                trust_user_ids: app.trust_user_ids,
                keys,
            });
        }
        apps
    }

    /// The app and key whose secret is `secret`.
    pub fn authenticate(&self, secret: &str) -> Option<Caller<'_>> {
        let &(a, k) = self.by_digest.get(&digest(secret))?;
        let app = &self.apps[a];
        let key = &app.keys[k];
        bool::from(key.secret.as_bytes().ct_eq(secret.as_bytes())).then_some(Caller { app, key })
    }

    pub fn app(&self, id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.id.as_str() == id)
    }

    /// The app whose public key is `key`.
    pub fn by_public_key(&self, key: &str) -> Option<&App> {
        self.apps
            .iter()
            .find(|a| bool::from(a.public_key.as_bytes().ct_eq(key.as_bytes())))
    }

    pub fn iter(&self) -> impl Iterator<Item = &App> {
        self.apps.iter()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a key's `scope` grants `required`.
pub fn scope_grants(scope: &str, required: &str) -> bool {
    let granted: Vec<&str> = scope.split(':').collect();
    let wanted: Vec<&str> = required.split(':').collect();
    for (i, want) in wanted.iter().enumerate() {
        match granted.get(i) {
            Some(&"*") if i + 1 == granted.len() => return true,
            Some(&"*") => {}
            Some(part) if part == want => {}
            _ => return false,
        }
    }
    granted.len() == wanted.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyConfig;

    fn apps() -> Apps {
        Apps::from_config(&[AppConfig {
            id: "dev".into(),
            key: "dev-public".into(),
            trust_user_ids: false,
            keys: vec![
                ApiKeyConfig {
                    name: "admin".into(),
                    secret: "0123456789abcdef-admin".into(),
                    scopes: vec!["*:*".into()],
                },
                ApiKeyConfig {
                    name: "sender".into(),
                    secret: "0123456789abcdef-sender".into(),
                    scopes: vec!["messages:send".into(), "channels:*".into()],
                },
            ],
        }])
    }

    #[test]
    fn secrets_find_their_key() {
        let apps = apps();
        let caller = apps.authenticate("0123456789abcdef-sender").unwrap();
        assert_eq!(
            (caller.app.id.as_str(), caller.key.name.as_str()),
            ("dev", "sender")
        );
        assert!(apps.authenticate("0123456789abcdef-nobody").is_none());
        assert!(apps.authenticate("").is_none());
        assert_eq!(apps.by_public_key("dev-public").unwrap().id.as_str(), "dev");
        assert!(apps.by_public_key("dev-publi").is_none());
        assert_eq!(apps.app("dev").unwrap().key("admin").unwrap().name, "admin");
    }

    #[test]
    fn scopes_match_part_by_part() {
        assert!(scope_grants("*:*", "channels:write"));
        assert!(scope_grants("*:*", "websockets-manager-api:query:messages"));
        assert!(scope_grants("channels:*", "channels:read"));
        assert!(scope_grants("messages:send", "messages:send"));
        assert!(!scope_grants("messages:send", "messages:read"));
        assert!(!scope_grants("channels:*", "users:read"));
        assert!(scope_grants(
            "websockets-manager-api:query:*",
            "websockets-manager-api:query:messages"
        ));
        assert!(!scope_grants(
            "websockets-manager-api:query:*",
            "websockets-manager-api:mutation:pushMessage"
        ));
        assert!(!scope_grants("*:read", "channels:read:more"));
        assert!(!scope_grants("channels", "channels:read"));
        let apps = apps();
        let sender = apps.authenticate("0123456789abcdef-sender").unwrap().key;
        assert!(sender.allows("channels:write") && !sender.allows("tokens:create"));
    }
}
