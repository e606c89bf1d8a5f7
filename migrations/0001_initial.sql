-- Per-number state that must survive a restart. Every number is its keyed hash (HMAC-SHA256 of
-- the canonical E.164 under SIGNAL_GATE_NUMBER_KEY); times are milliseconds since the epoch.

-- The escalating send schedule: codes sent in the current window and when the next may go.
CREATE TABLE send_schedules (
    number_hash  BLOB    PRIMARY KEY NOT NULL,
    window_start INTEGER NOT NULL,
    sends        INTEGER NOT NULL,
    next_send_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Wrong codes per number across every session and every code, in a fixed window.
CREATE TABLE wrong_codes (
    number_hash  BLOB    PRIMARY KEY NOT NULL,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL
) WITHOUT ROWID;

-- Sessions the gate created, so that verify only accepts a session for its own number.
CREATE TABLE sessions (
    session_hash BLOB    PRIMARY KEY NOT NULL,
    number_hash  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    wrong_codes  INTEGER NOT NULL DEFAULT 0,
    verified_at  INTEGER
) WITHOUT ROWID;

CREATE INDEX sessions_by_expiry ON sessions (expires_at);
