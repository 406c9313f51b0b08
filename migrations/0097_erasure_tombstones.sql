-- Erasure tombstones and the empty content.
--
-- An erasure of a digest the tenant's store does not hold (yet) — e.g. the run's outcome waits in a node's outcome journal
-- while PostgreSQL is away — used to record nothing, so the content was stored and served once the journal committed it.
-- The eraser now leaves a tombstone: an erased blob row with no size (never seen) and no chunks. Every insert path of
-- the service is `ON CONFLICT (tenant, sha256) DO NOTHING`, so content under a tombstone is never stored.
--
-- The empty content (SHA-256 e3b0c442…b855) has no byte to erase and every run may produce it: it is never erased.
-- Rows an earlier version marked erased stay as they are (the store reads the empty content as empty regardless).

SET ROLE sandbox_owner;

-- A row without a size is a tombstone: erased, with no chunks.
ALTER TABLE sandbox.evidence_blobs ALTER COLUMN bytes DROP NOT NULL;
ALTER TABLE sandbox.evidence_blobs ADD CONSTRAINT evidence_blobs_unsized_is_tombstone
    CHECK (bytes IS NOT NULL OR (erased_at IS NOT NULL AND chunks = 0 AND erased_by IS NOT NULL AND erase_reason IS NOT NULL));

-- Never again marked erased; NOT VALID keeps rows an earlier version erased (they are read as empty all the same).
ALTER TABLE sandbox.evidence_blobs ADD CONSTRAINT evidence_blobs_empty_never_erased
    CHECK (erased_at IS NULL OR sha256 <> 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855') NOT VALID;

RESET ROLE;

-- The service adds content, never an erased row: its INSERT is narrowed to the content's columns.
REVOKE INSERT ON sandbox.evidence_blobs FROM sandbox_app;
GRANT INSERT (tenant, sha256, bytes, chunks) ON sandbox.evidence_blobs TO sandbox_app;

-- The eraser adds tombstones only: without `bytes` (and with no INSERT on chunks), the check above makes each row it
-- adds an erased row without content.
GRANT INSERT (tenant, sha256, chunks, erased_at, erased_by, erase_reason) ON sandbox.evidence_blobs TO sandbox_eraser;
