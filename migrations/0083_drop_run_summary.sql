-- The inline run summary document (0050) is gone: it cost every commit of a run more than it saved the reads of
-- GET /v1/runs/{id}, which fold the run's few events instead (README, "Read models"). Its table held only what
-- the events hold; dropping it touches no event. Daily statistics (0050) stay.
SET ROLE sandbox_owner;

DROP TABLE IF EXISTS sandbox.mt_doc_runsummaryview;

RESET ROLE;
