-- Object positions learned as maps: in the bodies of `endpoint` (as it was named when learned), the keys of the
-- object at the generalised path `position` (`body/users`) are data (user names, e-mails), read as `{key}`.
-- Written by the replica that learned it, adopted by the others; readers fold places stored before with it.
CREATE TABLE key_positions (
    run_id     BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,
    position   TEXT NOT NULL,
    learned_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, endpoint, position)
);
