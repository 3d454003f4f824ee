-- Runs: one comparison (a candidate version, a replay), named by a label.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    label         TEXT NOT NULL UNIQUE,
    primary_url   TEXT NOT NULL DEFAULT '',
    secondary_url TEXT NOT NULL DEFAULT '',
    candidate_url TEXT NOT NULL DEFAULT '',
    started_at    BIGINT NOT NULL,  -- unix milliseconds
    last_seen_at  BIGINT NOT NULL
);

-- Counters per endpoint and minute: requests, compared, noisy, skipped:<reason>, error:<target>:<kind>,
-- body_skipped:<target>:<reason>. Writers add to them (upserts), so replicas sum up.
CREATE TABLE endpoint_counters (
    run_id   BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    endpoint TEXT NOT NULL,
    bucket   BIGINT NOT NULL,  -- unix minute
    name     TEXT NOT NULL,
    value    BIGINT NOT NULL,
    PRIMARY KEY (run_id, endpoint, bucket, name)
);
CREATE INDEX endpoint_counters_bucket ON endpoint_counters (bucket);

-- Per place (generalised path and kind): requests where the candidate differed there, by compatibility
-- class, and requests where secondary did.
CREATE TABLE path_counts (
    run_id       BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    endpoint     TEXT NOT NULL,
    bucket       BIGINT NOT NULL,
    path         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    raw_changed  BIGINT NOT NULL DEFAULT 0,
    raw_additive BIGINT NOT NULL DEFAULT 0,
    raw_breaking BIGINT NOT NULL DEFAULT 0,
    noise        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, endpoint, bucket, path, kind)
);
CREATE INDEX path_counts_bucket ON path_counts (bucket);

-- Requests per set of uncancelled candidate differences (the diff rate is exact from these).
CREATE TABLE signature_counts (
    run_id         BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    endpoint       TEXT NOT NULL,
    bucket         BIGINT NOT NULL,
    signature_hash BIGINT NOT NULL,
    signature      TEXT NOT NULL,  -- JSON array of [path, kind]
    count          BIGINT NOT NULL,
    PRIMARY KEY (run_id, endpoint, bucket, signature_hash)
);
CREATE INDEX signature_counts_bucket ON signature_counts (bucket);

-- Latency histograms (HDR, V2 serialisation), each writer's own per bucket, replaced as it grows; bucket -1
-- holds the writer's histogram of the whole run. Readers merge across writers and buckets.
CREATE TABLE latency_histograms (
    run_id    BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    endpoint  TEXT NOT NULL,
    bucket    BIGINT NOT NULL,
    target    TEXT NOT NULL,
    writer    TEXT NOT NULL,
    histogram BLOB NOT NULL,
    PRIMARY KEY (run_id, endpoint, bucket, target, writer)
);
CREATE INDEX latency_histograms_bucket ON latency_histograms (bucket);

-- Sample exchanges: the whole request and three outcomes with their differences, redacted, as JSON.
CREATE TABLE samples (
    id         TEXT PRIMARY KEY,  -- the exchange id (UUIDv7)
    run_id     BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    document   TEXT NOT NULL
);
CREATE INDEX samples_created_at ON samples (created_at);

-- Which places each sample shows (kind '' and path '': an exchange without differences).
CREATE TABLE sample_paths (
    run_id    BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    endpoint  TEXT NOT NULL,
    path      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    sample_id TEXT NOT NULL REFERENCES samples (id) ON DELETE CASCADE,
    PRIMARY KEY (run_id, endpoint, path, kind, sample_id)
);
CREATE INDEX sample_paths_sample ON sample_paths (sample_id);

-- Rules added through the API (the rules file is read at start and not stored).
CREATE TABLE rules (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint   TEXT,
    path       TEXT NOT NULL,
    action     TEXT NOT NULL,
    absolute   REAL,
    relative   REAL,
    created_at BIGINT NOT NULL
);

-- Settings shared by every replica (the redaction key).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
