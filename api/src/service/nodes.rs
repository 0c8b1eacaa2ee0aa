//! Which edges clients should connect to (SPEC §3 `/nodes/`, §4 `connectionUri`): healthy
//! ones, least loaded first. Processes sharing one public URL behind a shared socket count
//! as one node, with their connections summed.

use common::clock::now_us;

use super::{ServiceResult, Services};

/// An edge as offered to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Its `websockets.public_url` (`ws://host:port`), without a trailing slash.
    pub url: String,
    pub connections: u64,
}

impl Services {
    /// Healthy edges, least loaded first, at most `limit`.
    pub async fn edges(&self, limit: usize) -> ServiceResult<Vec<Edge>> {
        let now = now_us();
        let mut edges: Vec<Edge> = Vec::new();
        for node in self.stores.nodes.nodes().await? {
            if !node.is_healthy(now, self.settings.node_ttl_us) {
                continue;
            }
            let url = node.url.trim_end_matches('/').to_owned();
            match edges.iter_mut().find(|e| e.url == url) {
                Some(edge) => edge.connections += node.connections,
                None => edges.push(Edge {
                    url,
                    connections: node.connections,
                }),
            }
        }
        edges.sort_by(|a, b| {
            a.connections
                .cmp(&b.connections)
                .then_with(|| a.url.cmp(&b.url))
        });
        edges.truncate(limit);
        Ok(edges)
    }
}
