-- Queries of the web console (`reconcile console`). Each runs as the `authenticated` role with
-- the member's claims set: row-level security decides which rows exist for them.

-- name: console_fleet
-- One page of the fleet (see ops.console_fleet in migration 0016).
select slug, name, odoo_version, status, drifted, last_runs
from ops.console_fleet(%(pattern)s, %(after)s, %(before)s, %(limit)s)

-- name: console_project
select p.id, p.slug, p.name, p.description, p.odoo_version, p.status,
       ops.current_user_role(p.id),
       p.managed_by is not null and p.spec_hash is null
from ops.projects p where p.slug = %(slug)s

-- name: console_workflows
select w.id, w.workflow_type, w.name, w.enabled, w.git_ref, w.git_commit,
       w.managed_by is not null and w.spec_hash is null, r.id, r.run_number, r.status
from ops.workflows w
left join lateral (
  select r.id, r.run_number, r.status from ops.runs r
  where r.workflow_id = w.id order by r.created_at desc, r.id desc limit 1
) r on true
where w.project_id = %(project_id)s
order by w.workflow_type, w.name

-- name: console_members
select email, role, managed from ops.console_project_members(%(project_id)s)

-- name: console_recent_runs
select r.id, r.run_number, w.workflow_type || '/' || w.name, r.status, r.attempt,
       r.git_commit, r.created_at, r.finished_at, r.trigger_event
from ops.runs r
join ops.workflows w on w.id = r.workflow_id
where r.project_id = %(project_id)s
order by r.run_number desc
limit %(limit)s

-- name: console_advisories
select advisory_key, from_version, to_version, severity, title, description, migration_guide,
       affects_modules
from ops.upgrade_advisories
where from_version = %(version)s or to_version = %(version)s
order by array_position(array['critical', 'high', 'medium', 'low'], severity), advisory_key

-- name: console_run
select r.id, r.run_number, r.status, r.attempt, r.max_attempts, r.claimed_by,
       r.git_commit, r.git_ref, r.created_at, r.started_at,
       r.finished_at, r.exit_code, r.error_message, r.cancel_requested_at,
       p.slug, w.workflow_type || '/' || w.name, ops.current_user_role(p.id),
       r.trigger_event, r.retry_of
from ops.runs r
join ops.projects p on p.id = r.project_id
join ops.workflows w on w.id = r.workflow_id
where r.id = %(run_id)s

-- name: console_run_events
select created_at, event_type, message from ops.run_events
where run_id = %(run_id)s order by created_at, id

-- name: console_run_artifacts
select id, artifact_key, size_bytes, checksum, content_type, expires_at from ops.run_artifacts
where run_id = %(run_id)s order by artifact_key

-- name: console_artifact
select artifact_key, artifact_url from ops.run_artifacts
where id = %(artifact_id)s and run_id = %(run_id)s

-- name: console_logs_after
select timestamp, log_level, message from ops.run_logs
where run_id = %(run_id)s and timestamp > %(after)s
order by timestamp, id
limit %(limit)s

-- name: console_run_status
select status from ops.runs where id = %(run_id)s

-- name: console_applies
select id, applied_at, git_commit, git_ref, applied_by, changes, runs
from ops.console_applies(%(limit)s, %(before)s)

-- name: console_request_run
select ops.request_run(%(workflow_id)s, %(ref)s, %(commit)s)

-- name: console_retry_run
select ops.retry_run(%(run_id)s)

-- name: console_request_cancel
select ops.request_cancel(%(run_id)s, %(reason)s)

-- name: console_user_id
select id from auth.users where lower(email) = lower(%(email)s)
