//! Conformance of `Nodes`: heartbeats, the monitor's verdicts, draining, pruning.

use crate::store::{NodeHeartbeat, NodeStatus, Stores};

/// Runs every check (on an empty registry).
pub async fn run(s: &Stores) {
    edge_registry(s).await;
}

async fn edge_registry(s: &Stores) {
    let beat = |id: &str, url: &str, connections, now_us| NodeHeartbeat {
        id: id.into(),
        url: url.into(),
        connections,
        status: NodeStatus::Up,
        started_us: 1,
        now_us,
    };
    s.nodes
        .upsert_node(&beat("n1", "ws://a:1", 5, 100))
        .await
        .unwrap();
    s.nodes
        .upsert_node(&beat("n2", "ws://b:1", 1, 100))
        .await
        .unwrap();
    s.nodes
        .upsert_node(&beat("n1", "ws://a:1", 7, 200))
        .await
        .unwrap();
    let nodes = s.nodes.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!((nodes[0].connections, nodes[0].heartbeat_us), (7, 200));
    assert!(nodes[0].is_healthy(250, 100));
    assert!(!nodes[0].is_healthy(400, 100), "stale heartbeat");

    s.nodes
        .record_node_check("ws://a:1", false, 300, 2)
        .await
        .unwrap();
    assert!(
        !s.nodes.nodes().await.unwrap()[0].monitor_down,
        "one failure is not enough"
    );
    s.nodes
        .record_node_check("ws://a:1", false, 310, 2)
        .await
        .unwrap();
    let n1 = s.nodes.nodes().await.unwrap().remove(0);
    assert!(n1.monitor_down && n1.check_failures == 2 && n1.checked_us == Some(310));
    s.nodes
        .upsert_node(&beat("n1", "ws://a:1", 7, 320))
        .await
        .unwrap();
    assert!(
        s.nodes.nodes().await.unwrap()[0].monitor_down,
        "a heartbeat does not clear it"
    );
    s.nodes
        .record_node_check("ws://a:1", true, 330, 2)
        .await
        .unwrap();
    let n1 = s.nodes.nodes().await.unwrap().remove(0);
    assert!(!n1.monitor_down && n1.check_failures == 0);

    let mut draining = beat("n2", "ws://b:1", 1, 400);
    draining.status = NodeStatus::Draining;
    s.nodes.upsert_node(&draining).await.unwrap();
    assert!(!s.nodes.nodes().await.unwrap()[1].is_healthy(400, 100));

    assert_eq!(
        s.nodes.prune_nodes(350).await.unwrap(),
        1,
        "n1 last beat at 320"
    );
    s.nodes.remove_node("n2").await.unwrap();
    assert!(s.nodes.nodes().await.unwrap().is_empty());
}
