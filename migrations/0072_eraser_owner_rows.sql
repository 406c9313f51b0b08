-- The eraser records each erasure as an event (evidence_erased); the owner row the event table's trigger adds for it
-- (0071) is written with the eraser's rights. Insert only, as for the service role.
GRANT INSERT ON sandbox.audit_event_owner TO sandbox_eraser;
