//! SPEC §5 Socrate over real binaries: `POST /graphql` with `x-api-key`, driven with the
//! seed's own example requests verbatim (registerRecipient, then a socket at the returned
//! `connectionUri`, then pushMessage), the queries `messages` and `globalMessages` with
//! filters and `nextToken` paging, `pushGlobalMessage` with a topic, the Socrate scope
//! strings on keys, and refusals (401, FORBIDDEN, BAD_USER_INPUT naming the field).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{Cluster, DEADLINE, Options, Socket, eventually};
use serde_json::{Value, json};

/// Keys of the dev app with only Socrate scopes.
const KEYS: &str = r#"
[[apps.keys]]
name = "socrate-all"
secret = "socrate-all-secret-0123456789"
scopes = ["websockets-manager-api:query:*", "websockets-manager-api:mutation:*"]

[[apps.keys]]
name = "socrate-read"
secret = "socrate-read-secret-0123456789"
scopes = ["websockets-manager-api:query:*"]
"#;
const ALL: &str = "socrate-all-secret-0123456789";
const READ: &str = "socrate-read-secret-0123456789";

/// The seed's registerRecipient request, verbatim.
const REGISTER: &str = "mutation registerRecipient($input:RegisterRecipientInput!) {
      registerRecipient(input:$input) {
        token
        connectionUri
      }
    }";

/// The seed's pushMessage request, verbatim.
const PUSH: &str = "mutation pushMessage($input:MessageInput!) {
      pushMessage(input:$input) {
        item {
          id
          message
          status
          expiresAt
          createdAt
          deliveredAt
          cancelledAt
          globalMessageId
        }
        error{
          message
        }
      }
    }
    ";

const RECIPIENT: &str = "d9f3c17a-c6de-4e5e-b42b-98fbfb46a108";

/// POSTs a GraphQL request with `x-api-key`; the status and JSON answer.
async fn gql(cluster: &Cluster, key: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/graphql", cluster.api_url()))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The data of a request that must succeed.
async fn data(cluster: &Cluster, key: &str, query: &str, variables: Value) -> Value {
    let (status, body) = gql(cluster, Some(key), query, variables).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

/// The first error of a request that must fail at a field: its extensions.
async fn error(cluster: &Cluster, key: &str, query: &str, variables: Value) -> Value {
    let (status, body) = gql(cluster, Some(key), query, variables).await;
    assert_eq!(status, 200, "{body}");
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors: {body}"));
    let mut first = errors[0].clone();
    first["extensions"]["message"] = first["message"].clone();
    first["extensions"].clone()
}

#[tokio::test]
async fn a_socrate_client_registers_connects_and_receives_as_the_seed_shows() {
    let cluster = Cluster::start(Options {
        config: KEYS,
        ..Options::default()
    })
    .await;
    let registered = data(
        &cluster,
        ALL,
        REGISTER,
        json!({"input": {"recipient": RECIPIENT}}),
    )
    .await;
    let uri = registered["registerRecipient"]["connectionUri"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = registered["registerRecipient"]["token"].as_str().unwrap();
    assert_eq!(uri, format!("{}/?token={token}", cluster.edge_url(0)));
    let mut socket = Socket::connect(&uri).await;
    assert_eq!(socket.next_json(DEADLINE).await["type"], "welcome");

    let pushed = data(
        &cluster,
        ALL,
        PUSH,
        json!({"input": {"recipients": [RECIPIENT],
                         "message": "The quick brown fox jumps over the lazy dog"}}),
    )
    .await;
    let results = pushed["pushMessage"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0]["error"].is_null(), "{pushed}");
    let item = &results[0]["item"];
    assert_eq!(
        item["message"],
        "The quick brown fox jumps over the lazy dog"
    );
    assert_eq!(item["status"], "PENDING");
    assert!(item["createdAt"].is_string());
    let frame = socket.next_event(DEADLINE).await;
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["id"], item["id"]);
    assert_eq!(frame["data"], "The quick brown fox jumps over the lazy dog");

    // The message shows DELIVERED in the messages query.
    let query = "query($filter: MessagesFilter, $nextToken: String) {
        messages(filter: $filter, nextToken: $nextToken) {
          items { id recipient message status deliveredAt globalMessageId }
          nextToken
        }
      }";
    let listed = eventually("the message DELIVERED", DEADLINE, || async {
        let d = data(
            &cluster,
            READ,
            query,
            json!({"filter": {"recipient": RECIPIENT}}),
        )
        .await;
        let items = d["messages"]["items"].as_array().cloned().unwrap();
        (items.len() == 1 && items[0]["status"] == "DELIVERED").then_some(items)
    })
    .await;
    assert_eq!(listed[0]["id"], item["id"]);
    assert!(listed[0]["deliveredAt"].is_string());

    // One result per recipient, in order, an error for an invalid one.
    let mixed = data(
        &cluster,
        ALL,
        PUSH,
        json!({"input": {"recipients": ["a", "bad\nid", "b"], "message": "m", "expiresAt": "2099-07-18T15:00:00"}}),
    )
    .await;
    let results = mixed["pushMessage"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0]["item"]["id"].is_string() && results[0]["error"].is_null());
    assert!(results[1]["item"].is_null() && results[1]["error"]["message"].is_string());
    assert!(results[2]["item"]["id"].is_string());
    assert_eq!(results[0]["item"]["expiresAt"], "2099-07-18T15:00:00Z");
}

#[tokio::test]
async fn global_messages_by_topic_paging_scopes_and_refusals() {
    let cluster = Cluster::start(Options {
        config: KEYS,
        ..Options::default()
    })
    .await;
    // A recipient labelled "ops" and one without a topic.
    let register = |recipient: &'static str, topic: Option<&'static str>| {
        let cluster = &cluster;
        async move {
            let mut input = json!({"recipient": recipient});
            if let Some(topic) = topic {
                input["topic"] = json!(topic);
            }
            let d = data(cluster, ALL, REGISTER, json!({"input": input})).await;
            d["registerRecipient"]["connectionUri"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let mut ops = Socket::connect(&register("op", Some("ops")).await).await;
    let mut plain = Socket::connect(&register("pl", None).await).await;
    ops.next_json(DEADLINE).await;
    plain.next_json(DEADLINE).await;

    let push_global = "mutation($input: GlobalMessageInput!) {
        pushGlobalMessage(input: $input) { id message topic expiresAt createdAt }
      }";
    let g = data(
        &cluster,
        ALL,
        push_global,
        json!({"input": {"message": "deploy at 22:00", "topic": "ops"}}),
    )
    .await;
    assert_eq!(g["pushGlobalMessage"]["topic"], "ops");
    let frame = ops.next_event(DEADLINE).await;
    assert_eq!(frame["data"], "deploy at 22:00", "{frame}");
    assert_eq!(
        plain
            .try_next_json(std::time::Duration::from_millis(700))
            .await,
        None
    );
    let g_id = g["pushGlobalMessage"]["id"].as_str().unwrap().to_owned();
    eventually("op's message with globalMessageId", DEADLINE, || async {
        let d = data(
            &cluster,
            READ,
            "query($f: MessagesFilter) { messages(filter: $f) { items { recipient globalMessageId } } }",
            json!({"f": {"globalMessageId": g_id}}),
        )
        .await;
        let items = d["messages"]["items"].as_array().cloned().unwrap();
        (items.len() == 1 && items[0]["recipient"] == "op").then_some(())
    })
    .await;

    // globalMessages: filters, and a nextToken walk over more than a page.
    for i in 0..101 {
        data(
            &cluster,
            ALL,
            push_global,
            json!({"input": {"message": format!("n{i}")}}),
        )
        .await;
    }
    let list = "query($f: GlobalMessagesFilter, $t: String) {
        globalMessages(filter: $f, nextToken: $t) { items { id message topic } nextToken }
      }";
    let first = data(&cluster, READ, list, json!({})).await;
    let items = first["globalMessages"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(items[0]["message"], "n100", "newest first");
    let token = first["globalMessages"]["nextToken"].as_str().unwrap();
    let rest = data(&cluster, READ, list, json!({"t": token})).await;
    let rest_items = rest["globalMessages"]["items"].as_array().unwrap();
    assert_eq!(rest_items.len(), 2);
    assert_eq!(rest_items[1]["id"], g_id.as_str());
    assert!(rest["globalMessages"]["nextToken"].is_null());
    let by_topic = data(&cluster, READ, list, json!({"f": {"topic": "ops"}})).await;
    assert_eq!(
        by_topic["globalMessages"]["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let version = data(&cluster, READ, "{ version }", json!({})).await;
    assert!(version["version"].is_string());

    // Scopes: a query-only key may not mutate.
    let denied = error(
        &cluster,
        READ,
        push_global,
        json!({"input": {"message": "x"}}),
    )
    .await;
    assert_eq!(denied["code"], "FORBIDDEN", "{denied}");
    // No key, or an unknown one: 401.
    let (status, body) = gql(&cluster, None, "{ version }", json!({})).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = gql(&cluster, Some("wrong"), "{ version }", json!({})).await;
    assert_eq!(status, 401);

    // Bad input names its field.
    for (query, variables, field) in [
        (list, json!({"t": "forged"}), "nextToken"),
        (
            list,
            json!({"f": {"createdAt": {"from": "2023-13-45"}}}),
            "filter.createdAt.from",
        ),
        (
            PUSH,
            json!({"input": {"recipients": [], "message": "m"}}),
            "input.recipients",
        ),
        (
            PUSH,
            json!({"input": {"recipients": ["a", "a"], "message": "m"}}),
            "input.recipients[1]",
        ),
        (
            REGISTER,
            json!({"input": {"recipient": "r", "sourceIp": "nope"}}),
            "input.sourceIp",
        ),
        (
            push_global,
            json!({"input": {"message": "m", "expiresAt": "2020-01-01T00:00:00"}}),
            "input.expiresAt",
        ),
    ] {
        let e = error(&cluster, ALL, query, variables.clone()).await;
        assert_eq!(e["code"], "BAD_USER_INPUT", "{variables} → {e}");
        assert_eq!(e["field"], field, "{variables} → {e}");
    }
    // A value that is not a DateTime is refused by the schema itself.
    let (_, body) = gql(
        &cluster,
        Some(ALL),
        push_global,
        json!({"input": {"message": "m", "expiresAt": "yesterday"}}),
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("RFC 3339"),
        "{body}"
    );
}
