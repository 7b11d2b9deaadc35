-- The queue's cost per run (issue 12): fewer index entries per row version.
-- A run is written three times on its way through the queue (queued by its INSERT, claimed and
-- started by one UPDATE, finished by another) and neither UPDATE can be HOT (status is in the
-- partial indexes' predicates), so every row version gets an entry in every full index of
-- ops.runs: with 0022's indexes that was 10 entries for the claim and 9 for the finish, plus 3
-- per state_change event (3 events per run). Profiled during a drain, the backends spent ~37%
-- of their CPU inserting index entries (and pruning the duplicates they leave behind). The
-- indexes below served no query that another index does not serve as well:
-- * idx_ops_runs_workflow_id (workflow_id): a prefix of idx_ops_runs_commit and of
--   idx_ops_runs_workflow_latest, which serve every lookup by workflow.
-- * idx_ops_runs_status (status): the active states have partial indexes of their own
--   (queued: idx_ops_runs_claimable, idx_ops_runs_waiting; claimed or running:
--   idx_ops_runs_lease_expiry, idx_ops_runs_lane_busy); `succeeded` is most of the table, where
--   an index does not help. The rare final states keep one, partial, below (`runs list
--   --status failed` on a big table): a run that succeeds adds no entry to it.
-- * idx_ops_runs_queued (created_at, id) where queued: the claim reads idx_ops_runs_claimable
--   (queued and not blocked) since 0014; a queued run that is blocked waits for a need and is
--   found by idx_ops_runs_waiting.
-- * idx_ops_runs_claimed_by (claimed_by, claimed_at): no query looks runs up by worker; the
--   lease (id and lease token) fences a worker's writes.
-- * idx_ops_run_events_type (event_type, created_at): no query reads events by type; they are
--   read by run (idx_ops_run_events_run_id).
-- 19 entries per run in ops.runs become 13, and 9 per run in ops.run_events become 6.

drop index ops.idx_ops_runs_workflow_id;
drop index ops.idx_ops_runs_status;
drop index ops.idx_ops_runs_queued;
drop index ops.idx_ops_runs_claimed_by;
drop index ops.idx_ops_run_events_type;

create index idx_ops_runs_unsuccessful on ops.runs(created_at desc)
  where status in ('failed', 'canceled');

-- The claim's plan on a big queue is costed above jit_above_cost (a lane check per candidate):
-- LLVM then compiled it on every call, ~25 ms for a batch that runs in ~1 ms. No JIT for the
-- queue's functions; the server's setting is left alone.
alter function ops.claim_runs(text, integer, integer, timestamptz, uuid) set jit = off;
alter function ops.finish_runs(jsonb) set jit = off;
