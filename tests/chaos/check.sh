#!/bin/bash
# Invariants over the chaos database (read-only). Every query lists violations; empty = held.
. "$(dirname "$0")/env.sh"
q() { echo "-- $1"; $PSQL -F' | ' -P footer=off -c "$2"; }
q "runs per queue state / terminal type" "
WITH runs AS (SELECT DISTINCT stream_id FROM sandbox.mt_events WHERE type='run_requested')
SELECT q.state, string_agg(DISTINCT coalesce(t.type,'-')||coalesce('/'||(t.data->>'status'),''), ',') terms, count(*) FROM runs r
LEFT JOIN sandbox.run_queue q ON q.run_id=r.stream_id
LEFT JOIN sandbox.mt_events t ON t.stream_id=r.stream_id AND t.type IN ('run_completed','run_failed','run_abandoned')
GROUP BY 1 ORDER BY 1"
q "VIOLATION: run streams without exactly one terminal event (not in flight)" "
SELECT r.stream_id, q.state, count(t.*) terminals, string_agg(t.type,',') FROM (SELECT DISTINCT stream_id FROM sandbox.mt_events WHERE type='run_requested') r
LEFT JOIN sandbox.run_queue q ON q.run_id=r.stream_id
LEFT JOIN sandbox.mt_events t ON t.stream_id=r.stream_id AND t.type IN ('run_completed','run_failed','run_abandoned')
GROUP BY 1,2 HAVING count(t.*)<>1 AND coalesce(q.state,'') NOT IN ('queued','claimed')"
q "VIOLATION: in-flight queue rows that already have a terminal event" "
SELECT q.run_id,q.state,q.node_id,t.type FROM sandbox.run_queue q JOIN sandbox.mt_events t ON t.stream_id=q.run_id AND t.type IN ('run_completed','run_failed','run_abandoned') WHERE q.state IN ('queued','claimed')"
q "VIOLATION: queue state disagrees with terminal event" "
SELECT q.run_id,q.state,t.type,t.data->>'status' FROM sandbox.run_queue q JOIN sandbox.mt_events t ON t.stream_id=q.run_id AND t.type IN ('run_completed','run_failed','run_abandoned')
WHERE NOT ((q.state='finished' AND t.type IN ('run_completed','run_failed') AND coalesce(t.data->>'status','')<>'refused') OR (q.state='abandoned' AND t.type='run_abandoned') OR (q.state='refused' AND t.data->>'status'='refused'))"
q "VIOLATION: run started more than once (sandbox_created/started count or nodes)" "
SELECT stream_id, count(*) FILTER (WHERE type='sandbox_created') created, count(*) FILTER (WHERE type='sandbox_started') started, string_agg(DISTINCT data->>'node',',') nodes
FROM sandbox.mt_events WHERE type IN ('sandbox_created','sandbox_started') GROUP BY 1 HAVING count(*) FILTER (WHERE type='sandbox_created')>1 OR count(*) FILTER (WHERE type='sandbox_started')>1 OR count(DISTINCT data->>'node')>1"
q "VIOLATION: event after a terminal event other than late/removal/callback/access facts" "
SELECT e.stream_id,e.type,e.version,t.type term,t.version FROM sandbox.mt_events e JOIN sandbox.mt_events t ON t.stream_id=e.stream_id AND t.type IN ('run_completed','run_failed','run_abandoned') AND e.version>t.version
WHERE e.type NOT IN ('late_outcome_recorded','sandbox_removed','sandbox_created','sandbox_started','callback_attempted','sandbox_exited','output_recorded','artifact_recorded','run_accessed','evidence_accessed') GROUP BY 1,2,3,4,5"
q "abandoned runs: node named, time abandoned, last created (for lease+grace check against kill times)" "
SELECT t.stream_id, t.data->>'node' node, t.timestamp::time(3) abandoned_at, c.data->>'node' ran_on, c.timestamp::time(3) created_at, t.data->>'reason' reason
FROM sandbox.mt_events t LEFT JOIN sandbox.mt_events c ON c.stream_id=t.stream_id AND c.type='sandbox_created' WHERE t.type='run_abandoned' ORDER BY t.timestamp"
q "late outcomes" "SELECT e.stream_id, e.version, e.timestamp::time(3), e.data::text FROM sandbox.mt_events e WHERE e.type='late_outcome_recorded'"
q "runs per executor" "SELECT data->>'node', count(*) FROM sandbox.mt_events WHERE type='sandbox_created' GROUP BY 1"
q "VIOLATION: sandbox_created on non-executor node" "SELECT stream_id, data->>'node' FROM sandbox.mt_events WHERE type='sandbox_created' AND data->>'node' NOT LIKE 'chaos-exec-%'"
q "outbox summary" "SELECT (delivered_at IS NOT NULL) delivered, (given_up_at IS NOT NULL) given_up, attempts, count(*) FROM sandbox.callback_outbox GROUP BY 1,2,3 ORDER BY 1,2,3"
q "VIOLATION: outbox undelivered rows of ended runs older than 30 s" "
SELECT o.run_id, o.attempts, o.last_status, o.last_error, o.claimed_by FROM sandbox.callback_outbox o WHERE o.delivered_at IS NULL AND o.given_up_at IS NULL
AND EXISTS (SELECT 1 FROM sandbox.mt_events t WHERE t.stream_id=o.run_id AND t.type IN ('run_completed','run_failed','run_abandoned') AND t.timestamp < now()-interval '30 s')"
q "VIOLATION: callback_attempted count differs from outbox attempts" "
SELECT o.run_id,o.attempts,(SELECT count(*) FROM sandbox.mt_events e WHERE e.stream_id=o.run_id AND e.type='callback_attempted') events FROM sandbox.callback_outbox o
WHERE o.attempts <> (SELECT count(*) FROM sandbox.mt_events e WHERE e.stream_id=o.run_id AND e.type='callback_attempted')"
q "nodes" "SELECT node_id, roles, heartbeat_at::time(1), pid FROM sandbox.nodes ORDER BY 1"
