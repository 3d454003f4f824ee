-- When a run was closed by starting another for the same upstreams (it is kept, and no longer written).
ALTER TABLE runs ADD COLUMN closed_at BIGINT;

-- What --notify-url was told of a run, claimed here first so that of several replicas only one sends each
-- event: `regression ENDPOINT PATH` rows, and the `verdict` row whose state is the verdict last told.
CREATE TABLE notifications (
    run_id     BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    event      TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT '',
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, event)
);
