-- The seed's additional performance indexes that do not repeat an existing one.
-- (idx_ops_runs_queue_composite duplicated idx_ops_runs_queued, idx_ops_run_events_timeline
-- duplicated idx_ops_run_events_run_id, and idx_ops_run_artifacts_cleanup could not be built:
-- see 0003.)

create index idx_ops_runs_recent_by_project on ops.runs(project_id, created_at desc);
