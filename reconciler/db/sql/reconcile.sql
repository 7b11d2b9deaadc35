-- Queries of `reconcile plan` and `reconcile apply`. Values only through %(name)s / %s.

-- name: group_summaries
-- Per group (a project with its workflows and memberships; all tools; all advisories): the sum
-- of row hashes over managed rows with a spec_hash, the managed rows without one that were not
-- pruned (archived / disabled), and the managed rows. The row hash is the one of
-- reconciler/core/summary.py: md5('kind|identity...|spec_hash'), first 60 bits.
with managed_rows as (
  select p.slug as grp, 'project|' || p.slug as ident, p.spec_hash, p.status = 'archived' as pruned
  from ops.projects p where p.managed_by is not null
  union all
  select p.slug, 'workflow|' || p.slug || '|' || w.workflow_type || '|' || w.name, w.spec_hash,
         not w.enabled
  from ops.workflows w join ops.projects p on p.id = w.project_id
  where w.managed_by is not null
  union all
  select p.slug,
         'membership|' || p.slug || '|' || coalesce(ops.email_key(u.email), m.user_id::text),
         m.spec_hash, false
  from ops.project_memberships m
  join ops.projects p on p.id = m.project_id
  left join auth.users u on u.id = m.user_id
  where m.managed_by is not null
  union all
  select '@tool', 'tool|' || tool_name || '|' || version, spec_hash, false
  from ops.tools where managed_by is not null
  union all
  select '@upgrade_advisory', 'upgrade_advisory|' || advisory_key, spec_hash, false
  from ops.upgrade_advisories where managed_by is not null
)
select grp,
       coalesce(sum(('x' || substr(md5(ident || '|' || spec_hash), 1, 15))::bit(60)::bigint)
                filter (where spec_hash is not null), 0),
       count(*) filter (where spec_hash is null and not pruned),
       count(*)
from managed_rows
group by grp

-- The index of the groups a plan compares in full: identity, id, spec_hash, ownership.

-- name: index_projects
select slug, id::text, spec_hash, managed_by is not null from ops.projects
where slug = any(%(projects)s)

-- name: index_workflows
-- By the projects' ids (an index scan): joined on the slugs, a plan in chunks of projects
-- read the whole table once per chunk, quadratic in the fleet.
select p.slug, w.workflow_type, w.name, w.id, w.spec_hash, w.managed_by is not null
from ops.workflows w
join ops.projects p on p.id = w.project_id
where w.project_id = any(array(select id from ops.projects where slug = any(%(projects)s)))

-- name: index_memberships
select p.slug, m.user_id::text, m.id, m.spec_hash, m.managed_by is not null
from ops.project_memberships m
join ops.projects p on p.id = m.project_id
where m.project_id = any(array(select id from ops.projects where slug = any(%(projects)s)))

-- name: index_tools
select tool_name, version, id, spec_hash, managed_by is not null from ops.tools

-- name: index_advisories
select advisory_key, id, spec_hash, managed_by is not null from ops.upgrade_advisories

-- name: workflow_ids
select p.slug, w.workflow_type, w.name, w.id, p.id
from ops.workflows w
join ops.projects p on p.id = w.project_id
join unnest(%(slugs)s::text[], %(types)s::text[], %(names)s::text[]) as wanted(slug, type, name)
  on wanted.slug = p.slug and wanted.type = w.workflow_type and wanted.name = w.name

-- The full content of the rows the diff needs, by id.

-- name: read_projects
select id, slug, workspace_key, name, description, odoo_version, status, config, repository,
       managed_by is not null as managed, acknowledged_advisories
from ops.projects
where id = any(%(ids)s::uuid[])

-- name: read_workflows
select w.id, p.slug, w.workflow_type, w.name, w.description, w.enabled, w.git_ref,
       w.triggers, w.config, w.managed_by is not null as managed, w.needs, w.concurrency,
       w.schedule, w.schedule_timezone, w.paths
from ops.workflows w
join ops.projects p on p.id = w.project_id
where w.id = any(%(ids)s::uuid[])

-- name: read_memberships
select m.id, p.slug, m.user_id::text, coalesce(u.email, m.user_id::text), m.role,
       m.managed_by is not null as managed
from ops.project_memberships m
join ops.projects p on p.id = m.project_id
left join auth.users u on u.id = m.user_id
where m.id = any(%(ids)s::uuid[])

-- name: read_tools
select id, tool_name, version, docker_image, config, managed_by is not null as managed
from ops.tools
where id = any(%(ids)s::uuid[])

-- name: read_advisories
select id, advisory_key, from_version, to_version, severity, title, description,
       migration_guide, affects_modules, managed_by is not null as managed
from ops.upgrade_advisories
where id = any(%(ids)s::uuid[])

-- name: read_users
-- ops.email_key is reconciler/core/emails.py's email_key: one definition of "the same e-mail"
-- (0022 gives an ASCII e-mail its fast path inside the function, for every caller).
select id::text, ops.email_key(email)
from auth.users

-- name: existing_run_keys
-- A run counts only under its own workflow's key (0011 refuses any other `push:` key).
select r.idempotency_key
from ops.runs r
join ops.workflows w on w.id = r.workflow_id
join ops.projects p on p.id = w.project_id
where r.idempotency_key = any(%(keys)s)
  and right(r.idempotency_key, length(p.slug || w.workflow_type || w.name) + 3)
      = ':' || p.slug || '/' || w.workflow_type || '/' || w.name

-- name: lock_apply
-- The apply lock (0011): only a writer of this row can take it, unlike an advisory lock.
select id from ops.reconcile_lock for update

-- name: create_users
-- The ids are made by the writer (reconciler/db/writer.py: new_ids), so that the memberships
-- of a chunk refer to its new users before they are written.
copy auth.users (id, email) from stdin

-- name: project_repositories
select slug, repository from ops.projects where slug = any(%(slugs)s)

-- name: create_projects
copy ops.projects (id, slug, workspace_key, name, description, odoo_version, status, config,
                   repository, managed_by, spec_hash, acknowledged_advisories)
from stdin

-- name: update_project
update ops.projects
set workspace_key = %(workspace_key)s, name = %(name)s, description = %(description)s,
    odoo_version = %(odoo_version)s, status = %(status)s, config = %(config)s,
    repository = %(repository)s, managed_by = %(managed_by)s, spec_hash = %(spec_hash)s,
    acknowledged_advisories = %(acknowledged_advisories)s, updated_at = now()
where id = %(id)s

-- name: create_workflows
copy ops.workflows (project_id, workflow_type, name, description, enabled, git_ref, triggers,
                    config, managed_by, spec_hash, needs, concurrency, schedule,
                    schedule_timezone, paths)
from stdin

-- name: update_workflow
update ops.workflows
set description = %(description)s, enabled = %(enabled)s, git_ref = %(git_ref)s,
    triggers = %(triggers)s, config = %(config)s, managed_by = %(managed_by)s,
    spec_hash = %(spec_hash)s, needs = %(needs)s, concurrency = %(concurrency)s,
    schedule = %(schedule)s, schedule_timezone = %(timezone)s, paths = %(paths)s,
    updated_at = now()
where id = %(id)s

-- name: create_memberships
copy ops.project_memberships (project_id, user_id, role, managed_by, spec_hash) from stdin

-- name: update_membership
update ops.project_memberships
set role = %(role)s, managed_by = %(managed_by)s, spec_hash = %(spec_hash)s, updated_at = now()
where id = %(id)s

-- name: delete_memberships
delete from ops.project_memberships where id = any(%(ids)s::uuid[])

-- name: create_tools
copy ops.tools (tool_name, version, docker_image, config, managed_by, spec_hash) from stdin

-- name: update_tool
update ops.tools
set docker_image = %(docker_image)s, config = %(config)s, managed_by = %(managed_by)s,
    spec_hash = %(spec_hash)s, updated_at = now()
where id = %(id)s

-- name: delete_tools
delete from ops.tools where id = any(%(ids)s::uuid[])

-- name: create_advisories
copy ops.upgrade_advisories (advisory_key, from_version, to_version, severity, title,
                             description, migration_guide, affects_modules, managed_by,
                             spec_hash)
from stdin

-- name: update_advisory
update ops.upgrade_advisories
set from_version = %(from_version)s, to_version = %(to_version)s, severity = %(severity)s,
    title = %(title)s, description = %(description)s, migration_guide = %(migration_guide)s,
    affects_modules = %(affects_modules)s, managed_by = %(managed_by)s,
    spec_hash = %(spec_hash)s, updated_at = now()
where id = %(id)s

-- name: delete_advisories
delete from ops.upgrade_advisories where id = any(%(ids)s::uuid[])

-- name: enqueue_run
insert into ops.runs (project_id, workflow_id, idempotency_key, metadata, repository_url,
                      commit_sha)
values (%(project_id)s, %(workflow_id)s, %(key)s, %(metadata)s, %(repository)s, %(commit)s)

-- name: set_workflow_commit
update ops.workflows set git_commit = %(commit)s where id = %(id)s

-- name: record_apply
insert into ops.reconcile_applies (git_commit, git_ref, summary, plan, actor)
values (%(commit)s, %(ref)s, %(summary)s, %(plan)s, %(actor)s)
returning id

-- name: history
select id::text, applied_at, git_commit, git_ref, applied_by, actor, summary
from ops.reconcile_applies
order by applied_at desc
limit %(limit)s

-- name: history_show
select id::text, applied_at, git_commit, git_ref, applied_by, actor, summary, plan
from ops.reconcile_applies
where id::text like %(prefix)s || '%%'
order by applied_at desc
limit 2

-- Queries of `reconcile runs`.

-- name: runs_list
select r.id, p.slug, w.workflow_type || '/' || w.name, r.run_number, r.status, r.attempt,
       r.claimed_by, r.created_at, r.finished_at, r.exit_code, r.error_message
from ops.runs r
join ops.projects p on p.id = r.project_id
join ops.workflows w on w.id = r.workflow_id
where (%(project)s::text is null or p.slug = %(project)s)
  and (%(status)s::text is null or r.status = %(status)s)
order by r.created_at desc, r.id
limit %(limit)s

-- name: run_events
select created_at, event_type, message from ops.run_events
where run_id = %(run_id)s order by created_at, id

-- name: run_artifacts
select artifact_key, size_bytes, checksum, content_type, expires_at from ops.run_artifacts
where run_id = %(run_id)s order by artifact_key

-- name: run_logs_after
select timestamp, log_level, message from ops.run_logs
where run_id = %(run_id)s and timestamp > %(after)s
order by timestamp, id
limit 5000

-- name: run_status
select status from ops.runs where id = %(run_id)s

-- name: expired_artifacts
delete from ops.run_artifacts where expires_at < now() returning artifact_url

-- name: old_logs
delete from ops.run_logs l using ops.runs r
where r.id = l.run_id and r.status in ('succeeded', 'failed', 'canceled')
  and l.timestamp < now() - make_interval(days => %(days)s)

-- Queries of `reconcile export`.

-- name: project_slugs
select slug from ops.projects order by slug

-- Schedules (reconciler/db/schedules.py).

-- name: due_schedules
select workflow_id, schedule, timezone, after from ops.due_schedules(%(now)s)

-- name: enqueue_scheduled_run
select ops.enqueue_scheduled_run(%(id)s, %(slot)s, %(next)s, %(missed)s)

-- name: last_applied_commit
select git_commit from ops.reconcile_applies
where git_ref = %(ref)s and git_commit is not null and git_commit <> %(commit)s
order by applied_at desc
limit 1

-- Manual starts and retries (`reconcile runs start | retry | schedule`).

-- name: workflow_by_key
select w.id from ops.workflows w join ops.projects p on p.id = w.project_id
where p.slug = %(project)s and w.workflow_type = %(type)s and w.name = %(name)s

-- name: request_run
select ops.request_run(%(workflow_id)s, %(ref)s, %(commit)s)

-- name: retry_run
select ops.retry_run(%(run_id)s)

-- name: queued_run_summary
select p.slug || '/' || w.workflow_type || '/' || w.name, r.run_number, r.status,
       r.trigger_event, r.git_commit, r.error_message
from ops.runs r
join ops.workflows w on w.id = r.workflow_id
join ops.projects p on p.id = r.project_id
where r.id = %(run_id)s

-- name: schedules
select p.slug || '/' || w.workflow_type || '/' || w.name, w.schedule, w.schedule_timezone,
       w.enabled and p.status = 'active' and 'schedule' = any(w.triggers),
       w.last_scheduled_slot
from ops.workflows w
join ops.projects p on p.id = w.project_id
where w.schedule is not null and (%(project)s::text is null or p.slug = %(project)s)
order by 1

-- The upgrade gate's advisories.

-- name: gate_advisories
select advisory_key, from_version, to_version, severity, title, affects_modules
from ops.upgrade_advisories
