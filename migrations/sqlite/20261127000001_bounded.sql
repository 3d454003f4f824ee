-- A writer's heartbeat on its run, even without traffic: retention spares a run whose writer is alive.
ALTER TABLE runs ADD COLUMN heartbeat_at BIGINT NOT NULL DEFAULT 0;

-- Endpoint templates learned from traffic: in paths of `method` with `segments` segments whose earlier
-- segments make `prefix` (`/users`, or '' for the first segment), the next segment is a {param}.
CREATE TABLE endpoint_templates (
    run_id     BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    method     TEXT NOT NULL,
    segments   INTEGER NOT NULL,
    prefix     TEXT NOT NULL,
    learned_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, method, segments, prefix)
);

-- The last batch each writer committed: a batch sent again after a commit whose outcome was unknown is
-- recognised and not counted twice.
CREATE TABLE applied_batches (
    writer TEXT NOT NULL,
    batch  BIGINT NOT NULL,
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    PRIMARY KEY (writer, batch)
);
CREATE INDEX applied_batches_run ON applied_batches (run_id);
