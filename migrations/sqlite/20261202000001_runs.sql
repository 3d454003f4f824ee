-- When a run was closed by starting another for the same upstreams (it is kept, and no longer written).
ALTER TABLE runs ADD COLUMN closed_at BIGINT;

-- Events sent to --notify-url, claimed here first so that of several replicas only one sends each.
CREATE TABLE notifications (
    event      TEXT PRIMARY KEY,
    claimed_at BIGINT NOT NULL
);
