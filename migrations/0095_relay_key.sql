-- The key that authenticates live output relayed between nodes (FeedRelay): random, made once per database, readable by
-- the service's own login only. PostgreSQL checks no privilege on NOTIFY, so any role that can log in could otherwise
-- inject output into a follower's live stream; the auditor and eraser roles cannot read this table (the default
-- privileges of 0003 would let the auditor read it: revoked here).
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.relay_key (
    id  smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    key text NOT NULL
);

-- gen_random_uuid draws 122 bits from PostgreSQL's strong random source: three of them make the key.
INSERT INTO sandbox.relay_key (key)
SELECT replace(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
ON CONFLICT (id) DO NOTHING;

REVOKE ALL ON sandbox.relay_key FROM PUBLIC, sandbox_auditor, sandbox_eraser, sandbox_app;
GRANT SELECT ON sandbox.relay_key TO sandbox_app;

RESET ROLE;
