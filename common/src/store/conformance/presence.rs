//! Conformance of `Presence`: per-node counts summed over alive nodes, removal by a zero
//! count, dead and failed nodes no longer counting, clearing and pruning a node.

use crate::ids::{AppId, ChannelName, UserId};
use crate::store::{Alive, NodeHeartbeat, NodeStatus, PresenceCount, Stores};

fn beat(id: &str, now_us: i64) -> NodeHeartbeat {
    NodeHeartbeat {
        id: id.into(),
        url: format!("ws://{id}:1"),
        connections: 0,
        status: NodeStatus::Up,
        started_us: 1,
        now_us,
    }
}

fn count(app: &AppId, user: &str, channel: Option<&str>, connections: u64) -> PresenceCount {
    PresenceCount {
        app: app.clone(),
        user: UserId::parse(user).unwrap(),
        channel: channel.map(|c| ChannelName::parse(c).unwrap()),
        connections,
    }
}

/// `(user, sockets in the channel)` pairs.
fn users(ids: &[(&str, u64)]) -> Vec<(UserId, u64)> {
    ids.iter()
        .map(|(u, n)| (UserId::parse(*u).unwrap(), *n))
        .collect()
}

/// Runs every check (on an empty registry).
pub async fn run(s: &Stores) {
    let app = AppId::parse("pres").unwrap();
    let other = AppId::parse("pres-other").unwrap();
    let ch = ChannelName::parse("lobby").unwrap();
    let (p, nodes) = (&s.presence, &s.nodes);
    let alive = Alive {
        heartbeat_after_us: 500,
    };
    nodes.upsert_node(&beat("p1", 1_000)).await.unwrap();
    nodes.upsert_node(&beat("p2", 1_000)).await.unwrap();
    p.set_presence(
        "p1",
        &[
            count(&app, "u1", None, 2),
            count(&app, "u2", None, 1),
            count(&app, "u1", Some("lobby"), 1),
            count(&other, "u9", None, 1),
        ],
    )
    .await
    .unwrap();
    p.set_presence(
        "p2",
        &[
            count(&app, "u1", None, 1),
            count(&app, "u3", None, 1),
            count(&app, "u3", Some("lobby"), 1),
            count(&app, "u1", Some("lobby"), 2),
        ],
    )
    .await
    .unwrap();
    assert_eq!(p.users_online(&app, alive).await.unwrap(), 3, "u1 u2 u3");
    assert_eq!(p.users_online(&other, alive).await.unwrap(), 1, "per app");
    let u1 = UserId::parse("u1").unwrap();
    assert_eq!(
        p.user_connections(&app, &u1, alive).await.unwrap(),
        3,
        "summed"
    );
    assert_eq!(
        p.channel_users(&app, &ch, alive, 10).await.unwrap(),
        users(&[("u1", 3), ("u3", 1)]),
        "u1's sockets on p1 and p2 summed"
    );
    assert_eq!(
        p.channel_users(&app, &ch, alive, 1).await.unwrap(),
        users(&[("u1", 3)])
    );
    assert_eq!(p.channel_connections(&app, &ch, alive).await.unwrap(), 4);

    p.set_presence("p1", &[count(&app, "u2", None, 0)])
        .await
        .unwrap();
    assert_eq!(p.users_online(&app, alive).await.unwrap(), 2, "0 removes");

    // p2 stops beating: its presence stops counting.
    nodes.upsert_node(&beat("p1", 2_000)).await.unwrap();
    let later = Alive {
        heartbeat_after_us: 1_500,
    };
    assert_eq!(
        p.users_online(&app, later).await.unwrap(),
        1,
        "only p1's u1"
    );
    assert_eq!(p.user_connections(&app, &u1, later).await.unwrap(), 2);
    assert_eq!(
        p.channel_users(&app, &ch, later, 10).await.unwrap(),
        users(&[("u1", 1)])
    );

    // A node the monitor marked down does not count either.
    nodes
        .record_node_check("ws://p1:1", false, 2_000, 1)
        .await
        .unwrap();
    assert_eq!(p.users_online(&app, later).await.unwrap(), 0);
    nodes
        .record_node_check("ws://p1:1", true, 2_001, 1)
        .await
        .unwrap();
    assert_eq!(p.users_online(&app, later).await.unwrap(), 1);

    p.clear_presence("p1").await.unwrap();
    assert_eq!(
        p.users_online(&app, alive).await.unwrap(),
        2,
        "p2's u1 and u3 are left"
    );
    assert_eq!(
        p.users_online(&app, later).await.unwrap(),
        0,
        "and p2 is stale"
    );
    nodes.upsert_node(&beat("p2", 2_000)).await.unwrap();
    assert_eq!(
        p.users_online(&app, later).await.unwrap(),
        2,
        "p2 alive again: u1 and u3"
    );
    nodes.remove_node("p2").await.unwrap();
    nodes.upsert_node(&beat("p2", 3_000)).await.unwrap();
    assert_eq!(
        p.users_online(&app, alive).await.unwrap(),
        0,
        "a removed node's presence went with it"
    );
    p.set_presence("p2", &[count(&app, "u5", None, 1)])
        .await
        .unwrap();
    assert_eq!(nodes.prune_nodes(10_000).await.unwrap(), 2);
    nodes.upsert_node(&beat("p2", 20_000)).await.unwrap();
    assert_eq!(
        p.users_online(&app, alive).await.unwrap(),
        0,
        "a pruned node's presence went with it"
    );
    nodes.remove_node("p2").await.unwrap();
}
