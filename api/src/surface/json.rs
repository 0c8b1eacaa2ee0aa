//! Reading JSON request bodies field by field, so that every mistake is a 400 naming the
//! field (`history.size`, `channels[2]`), never a serde message about line and column.
//! Unknown fields are ignored, as most HTTP APIs do.

use serde_json::{Map, Value};

use crate::service::ServiceError;

/// A JSON object body (or a nested object), with the path of the fields read from it.
#[derive(Debug, Clone, Default)]
pub struct JsonObject {
    map: Map<String, Value>,
    /// `""` for the body, `"history."` for a nested object.
    prefix: String,
}

/// An error about `field`.
fn bad(field: String, message: &str) -> ServiceError {
    ServiceError::BadRequest {
        field,
        message: message.into(),
    }
}

impl JsonObject {
    /// Parses a body: an empty body is an empty object; anything else must be an object.
    pub fn parse(bytes: &[u8]) -> Result<JsonObject, ServiceError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObject::default());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject {
                map,
                prefix: String::new(),
            }),
            Ok(_) => Err(bad("body".into(), "must be a JSON object")),
            Err(e) => Err(bad("body".into(), &format!("is not valid JSON: {e}"))),
        }
    }

    /// The object itself, every field as given.
    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// The raw value of `field` (`null` counts as absent).
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// Whether `field` is present (even as `null`).
    pub fn has(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    pub fn string(&self, field: &str) -> Result<Option<String>, ServiceError> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(self.name(field), "must be a string")),
        }
    }

    pub fn required_string(&self, field: &str) -> Result<String, ServiceError> {
        self.string(field)?
            .ok_or_else(|| bad(self.name(field), "is required"))
    }

    /// A non-negative integer.
    pub fn u64(&self, field: &str) -> Result<Option<u64>, ServiceError> {
        match self.value(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(self.name(field), "must be a non-negative integer")),
        }
    }

    pub fn bool(&self, field: &str) -> Result<bool, ServiceError> {
        match self.value(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(self.name(field), "must be true or false")),
        }
    }

    /// An array of strings (absent: empty).
    pub fn strings(&self, field: &str) -> Result<Vec<String>, ServiceError> {
        match self.value(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(bad(
                        format!("{}[{i}]", self.name(field)),
                        "must be a string",
                    )),
                })
                .collect(),
            Some(_) => Err(bad(self.name(field), "must be an array of strings")),
        }
    }

    /// A nested object.
    pub fn object(&self, field: &str) -> Result<Option<JsonObject>, ServiceError> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(JsonObject {
                map: map.clone(),
                prefix: format!("{}.", self.name(field)),
            })),
            Some(_) => Err(bad(self.name(field), "must be an object")),
        }
    }

    /// Parses a string field with `parse`, naming the field in its error.
    pub fn parsed<T, E: std::fmt::Display>(
        &self,
        field: &str,
        parse: impl Fn(String) -> Result<T, E>,
    ) -> Result<Option<T>, ServiceError> {
        self.string(field)?
            .map(|s| parse(s).map_err(|e| bad(self.name(field), &e.to_string())))
            .transpose()
    }

    /// Parses every string of an array field with `parse`, naming the entry in an error.
    pub fn parsed_list<T, E: std::fmt::Display>(
        &self,
        field: &str,
        parse: impl Fn(String) -> Result<T, E>,
    ) -> Result<Vec<T>, ServiceError> {
        self.strings(field)?
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                parse(s).map_err(|e| bad(format!("{}[{i}]", self.name(field)), &e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ServiceError) -> String {
        match e {
            ServiceError::BadRequest { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field_and_its_path() {
        let body = JsonObject::parse(
            br#"{"user": 5, "ttl": -1, "channels": ["a", 3], "history": {"size": "x"}, "n": null}"#,
        )
        .unwrap();
        assert_eq!(field_of(body.string("user").unwrap_err()), "user");
        assert_eq!(field_of(body.u64("ttl").unwrap_err()), "ttl");
        assert_eq!(
            field_of(body.strings("channels").unwrap_err()),
            "channels[1]"
        );
        let history = body.object("history").unwrap().unwrap();
        assert_eq!(field_of(history.u64("size").unwrap_err()), "history.size");
        assert_eq!(body.string("n").unwrap(), None, "null is absent");
        assert_eq!(
            field_of(body.required_string("missing").unwrap_err()),
            "missing"
        );
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(JsonObject::parse(b"").is_ok());
        assert!(JsonObject::parse(b"  \n").is_ok());
        for bad in [&b"[1]"[..], b"\"s\"", b"{", b"nul"] {
            assert_eq!(field_of(JsonObject::parse(bad).unwrap_err()), "body");
        }
    }
}
