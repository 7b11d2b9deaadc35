-- `reconcile runs show | logs`: one run for an operator (reconciler/commands/runs.py).

-- name: run_ids_with_prefix
select id from ops.runs where id::text like %(prefix)s || '%%' order by id limit 2

-- name: run_summary
select r.id, p.slug, w.workflow_type || '/' || w.name, r.run_number, r.status,
       coalesce(r.commit_sha, r.metadata ->> 'commit'), r.metadata ->> 'ref', r.attempt,
       r.max_attempts, r.exit_code, r.error_message, r.cancel_requested_at, r.claimed_by,
       r.created_at, r.claimed_at, r.started_at, r.finished_at,
       (select l.metadata ->> 'workspace_commit' from ops.run_logs l
        where l.run_id = r.id and l.metadata ? 'workspace_commit'
        order by l.timestamp desc limit 1)
from ops.runs r
join ops.projects p on p.id = r.project_id
join ops.workflows w on w.id = r.workflow_id
where r.id = %(run_id)s

-- name: run_log_lines_after
select timestamp, log_level, message, coalesce(metadata ->> 'stream', '') from ops.run_logs
where run_id = %(run_id)s and timestamp > %(after)s
order by timestamp, id
limit 5000
