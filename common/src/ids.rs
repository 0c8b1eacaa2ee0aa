//! Names and ids as newtypes (SPEC §2), validated once where they enter the system, so a
//! channel name cannot be passed where a user id is expected and nothing downstream
//! re-checks their shape. Each parse error says what the rule is, for a 400 that names the
//! field.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name or id was refused; the text is the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub &'static str);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the rule of this id.
            pub fn parse(value: impl Into<String>) -> Result<$name, IdError> {
                let value = value.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&value)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<$name, IdError> {
                $name::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// An app (tenant) id from the configuration: `[A-Za-z0-9_.-]{1,64}`.
    AppId,
    |s| {
        if !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            Ok(())
        } else {
            Err(IdError("must match [A-Za-z0-9_.-]{1,64}"))
        }
    }
);

string_id!(
    /// An application's identifier for a person: 1 to 256 bytes of UTF-8 without control
    /// characters.
    UserId,
    |s| {
        if s.is_empty() || s.len() > MAX_USER_ID {
            Err(IdError("must be 1 to 256 bytes of UTF-8"))
        } else if s.chars().any(char::is_control) {
            Err(IdError("must not contain control characters"))
        } else {
            Ok(())
        }
    }
);

string_id!(
    /// A channel name: `[A-Za-z0-9_.:@-]{1,128}`.
    ChannelName,
    |s| {
        if !s.is_empty()
            && s.len() <= MAX_CHANNEL
            && s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
        {
            Ok(())
        } else {
            Err(IdError("must match [A-Za-z0-9_.:@-]{1,128}"))
        }
    }
);

/// Longest user id, in bytes.
pub const MAX_USER_ID: usize = 256;
/// Longest channel name, in bytes.
pub const MAX_CHANNEL: usize = 128;

/// A channel pattern a token may carry: an exact name, or `prefix*` (any channel whose
/// name starts with `prefix`; `*` alone is every channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelPattern(String);

impl ChannelPattern {
    pub fn parse(value: impl Into<String>) -> Result<ChannelPattern, IdError> {
        let value = value.into();
        let name = value.strip_suffix('*').unwrap_or(&value);
        if name.is_empty() && value == "*" {
            return Ok(ChannelPattern(value));
        }
        ChannelName::parse(name)
            .map_err(|_| IdError("must be a channel name, or a prefix followed by *"))?;
        Ok(ChannelPattern(value))
    }

    /// The exact channel this pattern names, if it is not a prefix pattern.
    pub fn exact(&self) -> Option<ChannelName> {
        (!self.0.ends_with('*')).then(|| ChannelName(self.0.clone()))
    }

    pub fn matches(&self, channel: &ChannelName) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => channel.as_str().starts_with(prefix),
            None => self.0 == channel.as_str(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ChannelPattern {
    type Error = IdError;
    fn try_from(value: String) -> Result<ChannelPattern, IdError> {
        ChannelPattern::parse(value)
    }
}

impl From<ChannelPattern> for String {
    fn from(p: ChannelPattern) -> String {
        p.0
    }
}

/// A new message id: UUIDv7 without dashes (32 hex characters, time-ordered).
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A new id in the hyphenated lowercase UUID form (UUIDv7), for APIs whose clients parse
/// ids as UUIDs (PushPushGo CORE's SDKs).
pub fn new_uuid() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_the_spec_alphabet() {
        for good in [
            "a",
            "news.sport",
            "room:42",
            "me@home",
            "a_b-c",
            &"x".repeat(128),
        ] {
            assert!(ChannelName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "with space", "slash/", "ünï", &"x".repeat(129)] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids_are_bounded_utf8() {
        assert!(UserId::parse("ünïcode user").is_ok());
        assert!(UserId::parse("x".repeat(256)).is_ok());
        assert!(UserId::parse("x".repeat(257)).is_err());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a\nb").is_err());
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        let exact = ChannelPattern::parse("news").unwrap();
        let prefix = ChannelPattern::parse("room:*").unwrap();
        let all = ChannelPattern::parse("*").unwrap();
        let name = |s: &str| ChannelName::parse(s).unwrap();
        assert!(exact.matches(&name("news")) && !exact.matches(&name("news2")));
        assert!(prefix.matches(&name("room:1")) && !prefix.matches(&name("rooms")));
        assert!(all.matches(&name("anything")));
        assert_eq!(exact.exact(), Some(name("news")));
        assert_eq!(prefix.exact(), None);
        assert!(ChannelPattern::parse("bad name*").is_err());
        assert!(ChannelPattern::parse("**").is_err());
    }

    #[test]
    fn ids_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<ChannelName>("\"ok\"").is_ok());
        let err = serde_json::from_str::<ChannelName>("\"not ok\"").unwrap_err();
        assert!(err.to_string().contains("[A-Za-z0-9_.:@-]"), "{err}");
    }
}
