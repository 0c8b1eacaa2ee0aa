-- Herald's live SQLite database (store.sqlite_live_path): what edges' heartbeats rebuild,
-- written with synchronous=OFF so it never waits behind an fsync. Applied on every open;
-- every statement is idempotent. Times are integer microseconds since the Unix epoch.

-- WebSocket edges (SPEC §7, §9). Edges write url..heartbeat_us; the monitor writes
-- checked_us, check_failures and monitor_down.
CREATE TABLE IF NOT EXISTS edge_nodes (
    node_id        TEXT PRIMARY KEY,
    url            TEXT NOT NULL,
    connections    INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL CHECK (status IN ('up', 'draining')),
    started_us     INTEGER NOT NULL,
    heartbeat_us   INTEGER NOT NULL,
    checked_us     INTEGER,
    check_failures INTEGER NOT NULL DEFAULT 0,
    monitor_down   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edge_nodes_by_url ON edge_nodes (url);

-- Presence: how many sockets a node holds per user (channel = '') and per user in each
-- channel. Owned by the node: replaced as it changes, deleted with the node.
CREATE TABLE IF NOT EXISTS presence (
    node_id     TEXT NOT NULL,
    app         TEXT NOT NULL,
    channel     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    connections INTEGER NOT NULL,
    PRIMARY KEY (node_id, app, channel, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS presence_by_channel ON presence (app, channel, user_id);
