//! Broadcasts at the edge (SPEC §4 Broadcasts): which users of each app are connected here,
//! with the topics of their tokens, and the worker that turns each broadcast arriving on
//! an app's broadcast stream into one addressed message per matching user connected here
//! (`Services::reach_broadcast`). Those messages then reach the users' sockets through
//! their inboxes, with a status, like any addressed message.
//!
//! The queue is bounded; a broadcast that finds it full is dropped for this edge (counted
//! in `herald_websockets_broadcasts_total{result="dropped"}`), as a live publish to a
//! channel without history would be.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::ids::{AppId, UserId};
use common::store::GlobalMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;

/// Broadcasts waiting for the worker.
const QUEUE: usize = 1_024;

/// Sockets of one user here: the topics of each one's token.
type Sockets = Vec<Arc<[String]>>;

/// The users connected here, per app, and the broadcasts waiting.
pub struct Members {
    users: Mutex<HashMap<AppId, HashMap<UserId, Sockets>>>,
    tx: mpsc::Sender<GlobalMessage>,
    rx: Mutex<Option<mpsc::Receiver<GlobalMessage>>>,
}

impl Default for Members {
    fn default() -> Members {
        let (tx, rx) = mpsc::channel(QUEUE);
        Members {
            users: Mutex::new(HashMap::new()),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Members {
    /// A socket of `user` with token topics `topics` opened here.
    pub fn add(&self, app: &AppId, user: &UserId, topics: Arc<[String]>) {
        if let Ok(mut users) = self.users.lock() {
            users
                .entry(app.clone())
                .or_default()
                .entry(user.clone())
                .or_default()
                .push(topics);
        }
    }

    /// A socket added with `topics` closed.
    pub fn remove(&self, app: &AppId, user: &UserId, topics: &Arc<[String]>) {
        let Ok(mut users) = self.users.lock() else {
            return;
        };
        let Some(of_app) = users.get_mut(app) else {
            return;
        };
        if let Some(sockets) = of_app.get_mut(user) {
            if let Some(i) = sockets.iter().position(|t| Arc::ptr_eq(t, topics)) {
                sockets.swap_remove(i);
            }
            if sockets.is_empty() {
                of_app.remove(user);
            }
        }
        if of_app.is_empty() {
            users.remove(app);
        }
    }

    /// The users of `app` here that a broadcast with `topic` reaches: all of them without
    /// a topic, else those with a socket whose token lists it.
    pub fn reached(&self, app: &AppId, topic: Option<&str>) -> Vec<UserId> {
        let Ok(users) = self.users.lock() else {
            return Vec::new();
        };
        let Some(of_app) = users.get(app) else {
            return Vec::new();
        };
        of_app
            .iter()
            .filter(|(_, sockets)| match topic {
                None => true,
                Some(topic) => sockets.iter().any(|t| t.iter().any(|x| x == topic)),
            })
            .map(|(user, _)| user.clone())
            .collect()
    }

    /// Queues a broadcast for the worker; false if the queue is full.
    pub fn offer(&self, message: GlobalMessage) -> bool {
        self.tx.try_send(message).is_ok()
    }
}

/// Reaches this edge's users with each queued broadcast, in arrival order.
pub async fn run(edge: Arc<EdgeState>, shutdown: CancellationToken) {
    let Some(mut rx) = edge.members.rx.lock().ok().and_then(|mut rx| rx.take()) else {
        return;
    };
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = rx.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let users = edge.members.reached(&message.app, message.topic.as_deref());
        if users.is_empty() {
            continue;
        }
        match edge.services.reach_broadcast(&message, &users).await {
            Ok(created) => {
                edge.metrics
                    .broadcasts
                    .with_label_values(&["reached"])
                    .inc();
                tracing::debug!(broadcast = %message.id, users = users.len(), created, "broadcast reached");
            }
            Err(e) => {
                edge.metrics.broadcasts.with_label_values(&["failed"]).inc();
                tracing::warn!(broadcast = %message.id, error = %e, "cannot reach a broadcast's users");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_select_the_users_reached() {
        let members = Members::default();
        let app = AppId::parse("a").unwrap();
        let (u1, u2) = (UserId::parse("u1").unwrap(), UserId::parse("u2").unwrap());
        let news: Arc<[String]> = Arc::from(vec!["news".to_owned()]);
        let none: Arc<[String]> = Arc::from(Vec::<String>::new());
        members.add(&app, &u1, news.clone());
        members.add(&app, &u2, none.clone());
        let mut all = members.reached(&app, None);
        all.sort();
        assert_eq!(all, vec![u1.clone(), u2.clone()]);
        assert_eq!(members.reached(&app, Some("news")), vec![u1.clone()]);
        assert!(members.reached(&app, Some("sport")).is_empty());
        assert!(
            members
                .reached(&AppId::parse("b").unwrap(), None)
                .is_empty()
        );
        members.remove(&app, &u1, &news);
        assert!(members.reached(&app, Some("news")).is_empty());
        members.remove(&app, &u2, &none);
        assert!(members.users.lock().unwrap().is_empty());
    }
}
