//! Message templates (SPEC §4 Templates; PushPushGo's "context"): create, read, delete,
//! and resolve one for a send. A template's content is the JSON object
//! `{title?, body?, data?, actionUrl?, icon?}` that each message sent with it carries as
//! its `data`; its `ttl` is the message's lifetime unless the send gives one.

use common::clock::now_us;
use common::ids::{AppId, new_message_id};
use common::message::JsonText;
use common::store::Template;
use serde_json::{Map, Value};

use super::messages::{MAX_TTL, url_field};
use super::{ServiceError, ServiceResult, Services};

/// Longest `title` and `body`, bytes.
pub const MAX_TEXT: usize = 4_096;

/// A template as a caller describes it.
#[derive(Debug, Clone, Default)]
pub struct TemplateInput {
    pub title: Option<String>,
    pub body: Option<String>,
    pub data: Option<Value>,
    pub action_url: Option<String>,
    pub icon: Option<String>,
    pub ttl: Option<u64>,
}

impl Services {
    /// Stores a template; 400 naming the field when it has none of `title`, `body`,
    /// `data`, a text is too long, a URL is not http(s), or `ttl` is out of range.
    pub async fn create_template(
        &self,
        app: &AppId,
        input: TemplateInput,
    ) -> ServiceResult<Template> {
        if input.title.is_none() && input.body.is_none() && input.data.is_none() {
            return Err(ServiceError::bad_request(
                "title",
                "a template needs at least one of title, body or data",
            ));
        }
        let mut content = Map::new();
        for (field, text) in [("title", input.title), ("body", input.body)] {
            if let Some(text) = text {
                if text.len() > MAX_TEXT {
                    return Err(ServiceError::bad_request(
                        field,
                        format!("is longer than {MAX_TEXT} bytes"),
                    ));
                }
                content.insert(field.into(), Value::String(text));
            }
        }
        if let Some(data) = input.data {
            content.insert("data".into(), data);
        }
        for (field, url) in [("actionUrl", input.action_url), ("icon", input.icon)] {
            if let Some(url) = url {
                url_field(field, &url)?;
                content.insert(field.into(), Value::String(url));
            }
        }
        match input.ttl {
            Some(0) => return Err(ServiceError::bad_request("ttl", "must be at least 1")),
            Some(ttl) if ttl > MAX_TTL => {
                return Err(ServiceError::bad_request(
                    "ttl",
                    format!("must be at most {MAX_TTL} seconds"),
                ));
            }
            _ => {}
        }
        let template = Template {
            id: new_message_id(),
            content: JsonText::from(Value::Object(content)),
            ttl: input.ttl,
            created_us: now_us(),
        };
        self.stores
            .templates
            .create_template(app, &template)
            .await?;
        Ok(template)
    }

    /// Template `id` of `app`; 404 without it.
    pub async fn template(&self, app: &AppId, id: &str) -> ServiceResult<Template> {
        self.stores
            .templates
            .template(app, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("template", "No such template."))
    }

    /// Deletes template `id`; messages already sent with it keep their content. 404
    /// without it.
    pub async fn delete_template(&self, app: &AppId, id: &str) -> ServiceResult<()> {
        if self.stores.templates.delete_template(app, id).await? {
            Ok(())
        } else {
            Err(ServiceError::not_found("template", "No such template."))
        }
    }
}
