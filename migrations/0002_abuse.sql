-- Blocks raised by abuse detection or by an operator. `key` is what the block applies to, in
-- a form an operator can read: an address or address block in CIDR form, a number prefix such
-- as +447400, a calling code such as 44, or for a single number its keyed hash in hex.
CREATE TABLE blocks (
    kind       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    until      INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;

-- One row per code sent, for SMS pumping detection: how many codes to a country, a prefix or
-- an address block were never verified. Keys are keyed hashes except the calling code.
CREATE TABLE sends (
    session_hash  BLOB    PRIMARY KEY NOT NULL,
    sent_at       INTEGER NOT NULL,
    calling_code  INTEGER NOT NULL,
    prefix_hash   BLOB    NOT NULL,
    block_hash    BLOB    NOT NULL,
    verified      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE INDEX sends_by_time ON sends (sent_at);
CREATE INDEX sends_by_country ON sends (calling_code, sent_at);
CREATE INDEX sends_by_prefix ON sends (prefix_hash, sent_at);
CREATE INDEX sends_by_block ON sends (block_hash, sent_at);
