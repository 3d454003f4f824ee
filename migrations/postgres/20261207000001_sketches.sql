-- Whole-run sketches, each writer's own, replaced as they grow (readers merge every writer's): per endpoint, the
-- features of the requests of one signature (item `features:<signature_hash>`, a heavy-hitter sketch of
-- feature names and values), and the shapes of the candidate's changes at one place (item
-- `shapes:<kind>:<path>`, such as `number → string` or `200 → 404`).
CREATE TABLE run_sketches (
    run_id   BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    endpoint TEXT NOT NULL,
    item     TEXT NOT NULL,
    writer   TEXT NOT NULL,
    sketch   TEXT NOT NULL,
    PRIMARY KEY (run_id, endpoint, item, writer)
);
