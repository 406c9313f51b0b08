-- Releasing the evidence holds of a node that never comes back (`sbx evidence release-holds NODE`).
--
-- The sweep keeps the holds of a silent node for good: its outcome journal may still bring events that name the content.
-- When the operator knows the node is gone for good (its machine decommissioned), the command records it here, once the
-- node has been silent for Queue:AbandonGraceSeconds and the run queue has no run claimed by it (Domain:
-- NodeHoldRelease.Decide, on facts read with the node's row locked, so that the node cannot register or heartbeat
-- between the check and this row). The sweep then releases every hold of the node last renewed at or before
-- released_at, unless the node started again since (Domain: EvidenceSweep.DecideHold), and removes the content no event
-- names, after its grace, as evidence_swept, deleting the holds in the removal's commit. The row itself removes nothing:
-- holds and content stay where they are until the sweep decides.
--
-- Who may write it: the service's role, which already deletes released holds itself (migration 0100); this gives it no
-- power over content it did not have. No role may delete a row: it is the operator's word, kept.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.evidence_node_releases (
    node         text        NOT NULL PRIMARY KEY,
    released_at  timestamptz NOT NULL DEFAULT now(),
    released_by  text        NOT NULL
);

RESET ROLE;

REVOKE ALL ON sandbox.evidence_node_releases FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT, UPDATE ON sandbox.evidence_node_releases TO sandbox_app;
GRANT SELECT ON sandbox.evidence_node_releases TO sandbox_auditor;
