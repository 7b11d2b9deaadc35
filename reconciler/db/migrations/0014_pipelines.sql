-- Pipelines and triggers (issue 10).
-- * Manual starts, retries and cancels that project members call as `authenticated`
--   (a web console, a Supabase client) or the service role calls for the CLI:
--   ops.request_run, ops.retry_run, ops.request_cancel. Owner, admin and developer may; a
--   viewer, a non-member and anon are refused with SQLSTATE 42501 (insufficient_privilege).
-- * ops.runs records why it exists: trigger_event (push | schedule | manual | retry), the
--   commit and ref it runs, who asked for it, the run it retries.
-- * A run that a push did not cause writes an `info` run_events row saying why it was queued
--   (by whom, retry of which run, which scheduled slot); 0004's trigger writes the status
--   changes that follow.

alter table ops.runs
  add column trigger_event text not null default 'push'
    check (trigger_event in ('push', 'schedule', 'manual', 'retry')),
  add column git_commit text check (git_commit ~ '^[0-9a-f]{7,64}$'),
  add column git_ref text check (length(git_ref) between 1 and 255),
  -- no foreign keys: clearing them on a delete would rewrite finished runs, which 0004 forbids
  add column requested_by uuid,
  add column retry_of uuid;

comment on column ops.runs.trigger_event is 'Why the run exists: push | schedule | manual | retry';
comment on column ops.runs.git_commit is 'The commit the run builds, tests or deploys';
comment on column ops.runs.requested_by is 'The user who started (or retried) the run by hand';
comment on column ops.runs.retry_of is 'The run this run retries';

-- Runs enqueued before 0014 keep their commit and ref in metadata only (finished runs cannot
-- be rewritten).

create index idx_ops_runs_retry_of on ops.runs(retry_of) where retry_of is not null;

-- Who may start, retry or cancel runs of a project by hand. A signed-in user (a JWT `sub`)
-- must be its owner, admin or developer; a caller with no user is allowed only when it is not
-- `authenticated` or `anon` (the service role, the owner of the schema: the CLI). Returns the
-- user, or null for the service role.
create function ops.require_run_operator(p_project_id uuid, p_action text)
returns uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_user uuid := ops.current_user_id();
  v_role text;
begin
  if v_user is null then
    if coalesce(current_setting('role', true), 'none') in ('authenticated', 'anon') then
      raise exception 'permission denied to %: no signed-in user', p_action
        using errcode = 'insufficient_privilege',
              hint = 'Call it with a user''s JWT (its sub claim names the user).';
    end if;
    return null;
  end if;
  select m.role into v_role
  from ops.project_memberships m
  where m.project_id = p_project_id and m.user_id = v_user;
  if v_role is null or v_role not in ('owner', 'admin', 'developer') then
    -- the same message whether the run or workflow exists or not: nothing leaks to outsiders
    raise exception 'permission denied to %: owner, admin or developer of its project required%',
      p_action, case when v_role is null then '' else format(' (you are %s)', v_role) end
      using errcode = 'insufficient_privilege';
  end if;
  return v_user;
end;
$$;

-- The event that says why a run was queued, whoever inserted it.
create function ops.record_run_created()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_by text := (select u.email from auth.users u where u.id = new.requested_by);
  v_retried integer := (select r.run_number from ops.runs r where r.id = new.retry_of);
begin
  insert into ops.run_events (run_id, event_type, message, payload)
  values (
    new.id,
    'info',
    case new.trigger_event
      when 'manual' then format('Run queued: started by hand by %s',
                                coalesce(v_by, 'the service role'))
      when 'retry' then format('Run queued: retry of run #%s by %s',
                               coalesce(v_retried::text, '(deleted)'),
                               coalesce(v_by, 'the service role'))
      when 'schedule' then format('Run queued: scheduled slot %s',
                                  coalesce(new.metadata ->> 'slot', '?'))
      else format('Run queued: push of %s', coalesce(left(new.git_commit, 12), 'a commit'))
    end,
    jsonb_strip_nulls(jsonb_build_object(
      'new_status', new.status, 'trigger', new.trigger_event, 'commit', new.git_commit,
      'ref', new.git_ref, 'requested_by', new.requested_by, 'retry_of', new.retry_of,
      'slot', new.metadata -> 'slot'
    ))
  );
  return null;
end;
$$;

-- (named so that it fires before place_run_in_pipeline: after-insert triggers go by name)
create trigger explain_run_created
  after insert on ops.runs
  for each row when (new.trigger_event <> 'push')
  execute function ops.record_run_created();

-- A run's commit and ref come from its metadata when an older writer gives them only there.
create function ops.fill_run_commit()
returns trigger
language plpgsql
as $$
begin
  if new.git_commit is null and new.metadata ->> 'commit' ~ '^[0-9a-f]{7,64}$' then
    new.git_commit := new.metadata ->> 'commit';
  end if;
  if new.git_ref is null and coalesce(new.metadata ->> 'ref', '') <> '' then
    new.git_ref := left(new.metadata ->> 'ref', 255);
  end if;
  return new;
end;
$$;

create trigger fill_run_commit
  before insert on ops.runs
  for each row execute function ops.fill_run_commit();

-- A manual start: a new queued run of the workflow for a commit (default: the commit of its
-- last push run, else the last applied commit of its branch) and ref (default: the
-- workflow's branch). Returns the run's id.
create function ops.request_run(
  p_workflow_id uuid, p_ref text default null, p_commit text default null
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_workflow ops.workflows;
  v_user uuid;
  v_commit text := lower(nullif(btrim(p_commit), ''));
  v_ref text := nullif(btrim(p_ref), '');
  v_id uuid;
begin
  select * into v_workflow from ops.workflows where id = p_workflow_id;
  v_user := ops.require_run_operator(v_workflow.project_id, 'start a run of this workflow');
  if v_workflow.id is null then
    raise exception 'request_run: no workflow %', p_workflow_id using errcode = 'no_data_found';
  end if;
  if not v_workflow.enabled then
    raise exception 'request_run: workflow % is disabled; enable it in its file first',
      v_workflow.name using errcode = 'object_not_in_prerequisite_state';
  end if;
  if (select status from ops.projects where id = v_workflow.project_id) <> 'active' then
    raise exception 'request_run: the project of workflow % is archived', v_workflow.name
      using errcode = 'object_not_in_prerequisite_state';
  end if;
  if v_commit is not null and v_commit !~ '^[0-9a-f]{7,64}$' then
    raise exception 'request_run: commit must be a hexadecimal SHA (7 to 64 digits)'
      using errcode = 'invalid_parameter_value';
  end if;
  if v_ref is not null and (length(v_ref) > 255 or v_ref !~ '^[A-Za-z0-9._/-]+$'
                            or v_ref ~ '(^[-/.]|\.\.|//|/$|\.lock$)') then
    raise exception 'request_run: ref % is not a valid branch or tag name', left(v_ref, 80)
      using errcode = 'invalid_parameter_value';
  end if;
  if v_commit is null and v_ref is null then
    -- the commit its last push run had, else the last applied commit of its branch
    v_commit := coalesce(v_workflow.git_commit, (
      select a.git_commit from ops.reconcile_applies a
      where a.git_commit ~ '^[0-9a-f]{7,64}$'
        and (v_workflow.git_ref is null or a.git_ref = v_workflow.git_ref)
      order by a.applied_at desc
      limit 1));
  end if;
  insert into ops.runs (project_id, workflow_id, trigger_event, git_commit, git_ref,
                        requested_by, metadata)
  values (v_workflow.project_id, v_workflow.id, 'manual', v_commit,
          coalesce(v_ref, v_workflow.git_ref), v_user,
          jsonb_strip_nulls(jsonb_build_object(
            'commit', v_commit, 'ref', coalesce(v_ref, v_workflow.git_ref),
            'trigger', 'manual', 'workflow', v_workflow.workflow_type || '/' || v_workflow.name)))
  returning id into v_id;
  return v_id;
end;
$$;

-- A retry: a new queued run of the same workflow, commit and ref, linked to the finished run
-- it retries (retry_of). Returns the new run's id.
create function ops.retry_run(p_run_id uuid)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_run ops.runs;
  v_user uuid;
  v_id uuid;
begin
  select * into v_run from ops.runs where id = p_run_id;
  v_user := ops.require_run_operator(v_run.project_id, 'retry this run');
  if v_run.id is null then
    raise exception 'retry_run: no run %', p_run_id using errcode = 'no_data_found';
  end if;
  if v_run.status not in ('succeeded', 'failed', 'canceled') then
    raise exception 'retry_run: run #% is %; only a finished run (succeeded, failed, canceled) can be retried',
      v_run.run_number, v_run.status using errcode = 'object_not_in_prerequisite_state';
  end if;
  if not (select enabled from ops.workflows where id = v_run.workflow_id) then
    raise exception 'retry_run: the workflow of run #% is disabled', v_run.run_number
      using errcode = 'object_not_in_prerequisite_state';
  end if;
  insert into ops.runs (project_id, workflow_id, trigger_event, git_commit, git_ref,
                        requested_by, retry_of, metadata)
  values (v_run.project_id, v_run.workflow_id, 'retry', v_run.git_commit, v_run.git_ref, v_user,
          v_run.id,
          (v_run.metadata - 'slot') || jsonb_build_object('trigger', 'retry',
                                                          'retry_of', v_run.id))
  returning id into v_id;
  return v_id;
end;
$$;

-- A member's cancel: the semantics of ops.cancel_run (0010), with the role check and an event
-- that says who asked.
create function ops.request_cancel(p_run_id uuid, p_reason text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_project uuid := (select project_id from ops.runs where id = p_run_id);
  v_user uuid := ops.require_run_operator(v_project, 'cancel this run');
  v_by text := coalesce((select email from auth.users where id = v_user), 'the service role');
  v_reason text := format('canceled by %s%s', v_by,
                          coalesce(': ' || left(nullif(btrim(p_reason), ''), 500), ''));
  v_result jsonb;
begin
  v_result := ops.cancel_run(p_run_id, v_reason);
  if (v_result ->> 'ok')::boolean then
    insert into ops.run_events (run_id, event_type, message, payload)
    values (p_run_id, 'info', 'Cancel requested: ' || v_reason,
            jsonb_strip_nulls(jsonb_build_object('requested_by', v_user,
                                                 'result', v_result ->> 'status')));
  end if;
  return v_result;
end;
$$;

revoke execute on function
  ops.require_run_operator(uuid, text), ops.request_run(uuid, text, text),
  ops.retry_run(uuid), ops.request_cancel(uuid, text)
from public, anon;
grant execute on function
  ops.request_run(uuid, text, text), ops.retry_run(uuid), ops.request_cancel(uuid, text)
to authenticated, service_role;
revoke execute on function
  ops.request_run(uuid, text, text), ops.retry_run(uuid), ops.request_cancel(uuid, text)
from ops_reader;

-- ---------------------------------------------------------------------------------------------
-- Pipelines: what a workflow declares (needs, concurrency, schedule, paths) and what each run
-- takes from it when it is queued.
-- * needs: the workflows (`name` or `type/name`) of the same project whose runs for the same commit must
--   succeed first. A need with no run for the commit is met (that workflow does not run for
--   it: other branch, paths, manual only); the latest run of the need for the commit decides
--   (a retry that succeeds unblocks). When it fails or is canceled, the waiting run is
--   canceled with the reason.
-- * concurrency: a lane. At most one run of a lane per project is claimed or running; a push
--   or scheduled run that joins a lane supersedes (cancels) the older queued runs of the same
--   workflow, with the reason naming the newer commit.
-- * schedule (cron) and schedule_timezone: workers enqueue the due slot themselves; exactly one
--   run per slot (the workflow row's last_scheduled_slot decides), only the latest missed slot.
-- * paths: globs for push runs; the plan decides, the database only keeps them.
-- A run copies its workflow's needs (resolved to workflow ids) and lane when it is queued, so
-- the claim reads only the runs table and a run follows the pipeline it was queued under.

-- Upgrade gate: the advisories (by key) a project's files acknowledge.
alter table ops.projects
  add column acknowledged_advisories text[] not null default '{}';
comment on column ops.projects.acknowledged_advisories is
  'Keys of the high/critical upgrade advisories the project acknowledged';

alter table ops.workflows drop constraint workflows_triggers_check;
alter table ops.workflows
  add constraint workflows_triggers_check
    check (triggers <@ array['push', 'schedule', 'manual']::text[]),
  add column needs text[] not null default '{}'
    check (cardinality(needs) <= 50),
  add column concurrency text check (concurrency ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
  add column schedule text check (length(schedule) between 9 and 200),
  add column schedule_timezone text check (length(schedule_timezone) between 1 and 64),
  add column paths text[] not null default '{}',
  add column schedule_anchor timestamptz,
  add column schedule_next timestamptz,
  add column last_scheduled_slot timestamptz;

comment on column ops.workflows.needs is 'Workflows (type/name) whose run for the commit must succeed first';
comment on column ops.workflows.concurrency is 'Lane: one claimed or running run per project';
comment on column ops.workflows.schedule is 'Cron expression of `on: [schedule]`';
comment on column ops.workflows.schedule_timezone is 'IANA time zone of the schedule (UTC when null)';
comment on column ops.workflows.paths is 'Globs: a push enqueues a run only when it changed a match';
comment on column ops.workflows.schedule_anchor is 'When the schedule was set: no slot before it runs';
comment on column ops.workflows.schedule_next is 'The next slot, as the last worker computed it';
comment on column ops.workflows.last_scheduled_slot is 'The latest slot a run was queued for';

-- The schedule's bookkeeping columns are not content: they must not mark the row as drifted.
drop trigger clear_spec_hash on ops.workflows;
create trigger clear_spec_hash before update on ops.workflows
  for each row execute function ops.clear_spec_hash(
    'spec_hash', 'updated_at', 'git_commit', 'schedule_anchor', 'schedule_next',
    'last_scheduled_slot');

-- A new or changed schedule starts from now: no slot before it runs.
create function ops.anchor_schedule()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT'
     or new.schedule is distinct from old.schedule
     or new.schedule_timezone is distinct from old.schedule_timezone
     or new.enabled is distinct from old.enabled
     or new.triggers is distinct from old.triggers then
    new.schedule_anchor := now();
    new.schedule_next := null;
  end if;
  return new;
end;
$$;

-- (named to fire after 0011's guard_managed_row: before-triggers go by name, and the guard
-- must judge what a member changed, not this bookkeeping)
create trigger schedule_anchor before insert or update on ops.workflows
  for each row execute function ops.anchor_schedule();

alter table ops.runs
  add column needs uuid[] not null default '{}',
  add column concurrency_group text,
  add column blocked boolean not null default false;

comment on column ops.runs.needs is 'Workflows whose run for the same commit must succeed first';
comment on column ops.runs.concurrency_group is 'The lane of the run (its workflow''s concurrency)';
comment on column ops.runs.blocked is 'Queued but waiting for a need: not claimable until it succeeded';

create index idx_ops_runs_commit on ops.runs(workflow_id, git_commit, run_number desc);
create index idx_ops_runs_lane_busy on ops.runs(project_id, concurrency_group)
  where status in ('claimed', 'running') and concurrency_group is not null;
create index idx_ops_runs_waiting on ops.runs(project_id, git_commit)
  where status = 'queued' and needs <> '{}';
-- The claim's scan: queued runs not waiting for a need, in claim order. Waiting runs are not
-- in it, so a thousand deploys waiting for their tests cost a claim nothing.
create index idx_ops_runs_claimable on ops.runs(created_at, id)
  where status = 'queued' and not blocked;

-- What a run takes from its workflow when queued (whoever inserts it; not writable by members).
create function ops.snapshot_run_pipeline()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  select w.concurrency,
         coalesce(array(select n.id from ops.workflows n
                        where n.project_id = w.project_id and n.id <> w.id
                          and (n.workflow_type || '/' || n.name = any(w.needs)
                               or n.name = any(w.needs))
                        order by n.workflow_type, n.name), '{}')
  into new.concurrency_group, new.needs
  from ops.workflows w
  where w.id = new.workflow_id;
  new.needs := coalesce(new.needs, '{}');
  -- waiting until place_run_in_pipeline (after the statement, when it sees every row the
  -- statement inserted, e.g. a build and its test queued together) finds its needs met
  new.blocked := new.needs <> '{}';
  return new;
end;
$$;

create trigger snapshot_run_pipeline
  before insert on ops.runs
  for each row execute function ops.snapshot_run_pipeline();

-- The latest run of each need for the commit, the first one that is not a success.
create function ops.unmet_need(p_commit text, p_needs uuid[])
returns table (run_id uuid, run_number integer, status text, workflow text)
language sql
stable
set search_path = ''
as $$
  select l.id, l.run_number, l.status, w.workflow_type || '/' || w.name
  from unnest(p_needs) with ordinality as n(workflow_id, i)
  join ops.workflows w on w.id = n.workflow_id
  cross join lateral (
    select r.id, r.run_number, r.status from ops.runs r
    where r.workflow_id = n.workflow_id and r.git_commit = p_commit
    order by r.run_number desc
    limit 1
  ) l
  where l.status <> 'succeeded'
  order by l.status in ('failed', 'canceled') desc, n.i
  limit 1;
$$;

create function ops.needs_met(p_commit text, p_needs uuid[])
returns boolean
language sql
stable
set search_path = ''
as $$
  select not exists (
    select from unnest(p_needs) as n(workflow_id)
    cross join lateral (
      select r.status from ops.runs r
      where r.workflow_id = n.workflow_id and r.git_commit = p_commit
      order by r.run_number desc
      limit 1
    ) l
    where l.status <> 'succeeded'
  );
$$;

create function ops.lane_busy(p_project_id uuid, p_group text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select exists (
    select from ops.runs o
    where o.project_id = p_project_id and o.concurrency_group = p_group
      and o.status in ('claimed', 'running')
  );
$$;

-- Cancel a queued run whose need failed, naming the need. Returns whether it did.
create function ops.cancel_for_failed_need(p_run ops.runs)
returns boolean
language plpgsql
set search_path = ''
as $$
declare
  v_need record;
begin
  select * into v_need from ops.unmet_need(p_run.git_commit, p_run.needs);
  if v_need.run_id is null or v_need.status not in ('failed', 'canceled') then
    return false;
  end if;
  update ops.runs
  set status = 'canceled',
      error_message = format('canceled: its need %s %s (run #%s)', v_need.workflow,
                             v_need.status, v_need.run_number)
  where id = p_run.id and status = 'queued';
  return found;
end;
$$;

-- After a run is queued: supersede older queued runs of its workflow in its lane, and say
-- what it waits for (or cancel it when a need already failed).
create function ops.place_run_in_pipeline()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_need record;
  v_old record;
begin
  if new.concurrency_group is not null and new.trigger_event in ('push', 'schedule') then
    for v_old in
      update ops.runs o
      set status = 'canceled',
          error_message = format('superseded by commit %s (run #%s) in lane %s',
                                 coalesce(left(new.git_commit, 12), '(none)'), new.run_number,
                                 new.concurrency_group)
      where o.workflow_id = new.workflow_id and o.status = 'queued'
        and o.run_number < new.run_number
      returning o.id
    loop
      insert into ops.run_events (run_id, event_type, message, payload)
      values (v_old.id, 'info',
              format('Superseded by commit %s (run #%s)',
                     coalesce(left(new.git_commit, 12), '(none)'), new.run_number),
              jsonb_build_object('superseded_by', new.id, 'commit', new.git_commit,
                                 'lane', new.concurrency_group));
    end loop;
  end if;
  if cardinality(new.needs) > 0 then
    select * into v_need from ops.unmet_need(new.git_commit, new.needs);
    if v_need.run_id is null then
      update ops.runs set blocked = false where id = new.id;
    elsif v_need.status in ('failed', 'canceled') then
      perform ops.cancel_for_failed_need(new);
    else
      insert into ops.run_events (run_id, event_type, message, payload)
      values (new.id, 'info',
              format('Waiting for %s (run #%s, %s) to succeed', v_need.workflow,
                     v_need.run_number, v_need.status),
              jsonb_build_object('waiting_on', v_need.run_id, 'need', v_need.workflow));
    end if;
  end if;
  return null;
end;
$$;

create trigger place_run_in_pipeline
  after insert on ops.runs
  for each row when (new.concurrency_group is not null or new.needs <> '{}')
  execute function ops.place_run_in_pipeline();

-- A need that failed or was canceled cancels the queued runs waiting on it (for its commit),
-- and so on down the pipeline (their cancel fires this trigger again).
create function ops.cancel_dependents()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_run ops.runs;
begin
  for v_run in
    select d.* from ops.runs d
    where d.project_id = new.project_id and d.git_commit = new.git_commit
      and d.status = 'queued' and d.needs <> '{}' and new.workflow_id = any(d.needs)
    for update
  loop
    perform ops.cancel_for_failed_need(v_run);
  end loop;
  return null;
end;
$$;

create trigger cancel_dependents
  after update of status on ops.runs
  for each row when (new.status in ('failed', 'canceled') and new.git_commit is not null)
  execute function ops.cancel_dependents();

-- A need that succeeded makes the runs waiting on it claimable once all their needs are met.
create function ops.unblock_dependents()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update ops.runs d
  set blocked = false
  where d.project_id = new.project_id and d.git_commit = new.git_commit
    and d.status = 'queued' and d.blocked and d.needs <> '{}' and new.workflow_id = any(d.needs)
    and ops.needs_met(d.git_commit, d.needs);
  -- no NOTIFY: the worker that finished the need claims next in the same transaction and sees
  -- the run it unblocked; a NOTIFY per success would serialise the workers' commits
  return null;
end;
$$;

-- A need that runs again for a commit (a retry, a manual start) makes the runs waiting on it
-- wait again, for the new run.
create function ops.reblock_dependents()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update ops.runs d
  set blocked = true
  where d.project_id = new.project_id and d.git_commit = new.git_commit
    and d.status = 'queued' and not d.blocked and d.needs <> '{}'
    and new.workflow_id = any(d.needs);
  return null;
end;
$$;

create trigger reblock_dependents
  after insert on ops.runs
  for each row when (new.trigger_event <> 'push' and new.git_commit is not null)
  execute function ops.reblock_dependents();

create trigger unblock_dependents
  after update of status on ops.runs
  for each row when (new.status = 'succeeded' and new.git_commit is not null)
  execute function ops.unblock_dependents();

-- The next run a worker may take, locked: queued, not waiting for a need (`blocked`, kept by
-- the triggers above and settled by the reaper), its lane free. The predicate has no function
-- call, so whatever plan the statistics give, a claim costs about what a plain one does. The
-- lane is serialised by a transaction-level advisory lock, then checked again under it, so two
-- workers never both take a run of one lane. Every claim function goes through here.
create function ops.next_claimable_run()
returns uuid
language plpgsql
set search_path = ''
as $$
declare
  v_skip uuid[] := '{}';
  v_id uuid;
  v_project uuid;
  v_group text;
begin
  loop
    select q.id, q.project_id, q.concurrency_group into v_id, v_project, v_group
    from ops.runs q
    where q.status = 'queued' and not q.blocked
      and q.id <> all(v_skip)
      and (q.concurrency_group is null or not exists (
        select from ops.runs o
        where o.project_id = q.project_id and o.concurrency_group = q.concurrency_group
          and o.status in ('claimed', 'running')))
    order by q.created_at, q.id
    for update skip locked
    limit 1;
    if v_id is null or v_group is null then
      return v_id;
    end if;
    if pg_try_advisory_xact_lock(hashtextextended(v_project::text || '/' || v_group, 14))
       and not ops.lane_busy(v_project, v_group) then
      return v_id;
    end if;
    v_skip := v_skip || v_id;
  end loop;
end;
$$;

-- Replaces 0010's (and 0012's): the same result, from the runs next_claimable_run allows.
create or replace function ops.claim_run(
  p_worker_id text, p_lease_seconds integer default 30, p_start boolean default false
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs;
  v_id uuid;
begin
  if coalesce(p_worker_id, '') = '' or coalesce(p_lease_seconds, 0) < 1 then
    raise exception 'claim_run: a worker id and a lease of at least 1 second are required'
      using errcode = 'invalid_parameter_value';
  end if;
  v_id := ops.next_claimable_run();
  if v_id is null then
    return null;
  end if;
  update ops.runs r
  set status = 'claimed', claimed_by = p_worker_id, claimed_at = now(),
      attempt = r.attempt + 1, lease_token = gen_random_uuid(),
      lease_expires_at = now() + make_interval(secs => p_lease_seconds)
  where r.id = v_id
  returning r.* into v_run;

  if p_start then  -- claimed, then running: two moves, two events, one round trip
    update ops.runs set status = 'running' where id = v_run.id returning * into v_run;
  end if;
  -- what the worker needs to run it, in the same round trip
  return (
    select jsonb_build_object(
      'run_id', v_run.id, 'project_id', v_run.project_id, 'workflow_id', v_run.workflow_id,
      'run_number', v_run.run_number, 'attempt', v_run.attempt,
      'lease_token', v_run.lease_token, 'lease_expires_at', v_run.lease_expires_at,
      'metadata', v_run.metadata, 'project', p.slug, 'type', w.workflow_type,
      'workflow', w.name, 'config', w.config, 'commit', v_run.git_commit, 'ref', v_run.git_ref,
      -- the code to check out, when 0012 (issue 9) recorded it: read by name from the row so
      -- that this function stands whichever of the two migrations a database has
      'repository_url', to_jsonb(v_run) -> 'repository_url',
      'commit_sha', to_jsonb(v_run) -> 'commit_sha'
    )
    from ops.workflows w join ops.projects p on p.id = w.project_id
    where w.id = v_run.workflow_id
  );
end;
$$;

-- Replaces 0005's seed function: the legacy claim obeys needs and lanes too.
create or replace function ops.claim_next_run(p_worker_id text)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs;
  v_id uuid;
begin
  if coalesce(p_worker_id, '') = '' then
    raise exception 'claim_next_run: worker id is required' using errcode = 'invalid_parameter_value';
  end if;
  v_id := ops.next_claimable_run();
  update ops.runs r
  set status = 'claimed', claimed_by = p_worker_id, claimed_at = now(), updated_at = now()
  where r.id = v_id
  returning r.* into v_run;

  if v_run.id is null then
    return jsonb_build_object('run_id', null, 'message', 'No queued runs available');
  end if;
  return jsonb_build_object(
    'run_id', v_run.id,
    'project_id', v_run.project_id,
    'workflow_id', v_run.workflow_id,
    'run_number', v_run.run_number,
    'claimed_at', v_run.claimed_at
  );
end;
$$;

-- Replaces 0010's: also settles waiting runs whose need finished in a transaction that could
-- not see them (a need finishing while its dependent was being queued): unblocked when their
-- needs are met, canceled when one failed.
create or replace function ops.reap_expired_runs(p_limit integer default 100)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_count integer;
  v_requeued integer;
  v_run ops.runs;
begin
  with expired as (
    select id from ops.runs
    where status in ('claimed', 'running') and lease_expires_at <= now()
    order by lease_expires_at
    limit p_limit
    for update skip locked
  ), moved as (
    update ops.runs r
    set status = case when r.attempt >= r.max_attempts then 'failed' else 'queued' end,
        error_message = case when r.attempt >= r.max_attempts then format(
          'lease expired: worker %s stopped heartbeating (attempt %s of %s)',
          r.claimed_by, r.attempt, r.max_attempts) else r.error_message end
    from expired
    where r.id = expired.id
    returning r.status
  )
  select count(*), count(*) filter (where status = 'queued') into v_count, v_requeued from moved;
  if v_requeued > 0 then
    perform pg_notify('ops_runs', 'queued');
  end if;
  for v_run in
    select q.* from ops.runs q
    where q.status = 'queued' and q.needs <> '{}'
      and q.blocked = ops.needs_met(q.git_commit, q.needs)
    limit p_limit
    for update skip locked
  loop
    if v_run.blocked then
      update ops.runs set blocked = false where id = v_run.id;
    elsif not ops.cancel_for_failed_need(v_run) then
      update ops.runs set blocked = true where id = v_run.id;  -- a need runs again (a retry)
    end if;
  end loop;
  return v_count;
end;
$$;

-- Schedules. Workers compute slots from the cron expression (Python, croniter); the database
-- decides which worker enqueues a slot: the first to move last_scheduled_slot forward.
create function ops.due_schedules(p_now timestamptz)
returns table (workflow_id uuid, schedule text, timezone text, after timestamptz)
language sql
stable
set search_path = ''
as $$
  select w.id, w.schedule, w.schedule_timezone,
         greatest(w.schedule_anchor, w.last_scheduled_slot)
  from ops.workflows w
  join ops.projects p on p.id = w.project_id
  where w.enabled and 'schedule' = any(w.triggers) and w.schedule is not null
    and p.status = 'active'
    and (w.schedule_next is null or w.schedule_next <= p_now);
$$;

-- Queue the run of a due slot (p_slot; null when none is due yet) and record the next slot.
-- Returns the new run's id, or null when the slot is not due, taken by another worker, or the
-- workflow is no longer scheduled. p_missed: earlier slots skipped after downtime.
create function ops.enqueue_scheduled_run(
  p_workflow_id uuid, p_slot timestamptz, p_next timestamptz, p_missed integer default 0
)
returns uuid
language plpgsql
set search_path = ''
as $$
declare
  v_workflow ops.workflows;
  v_id uuid;
begin
  update ops.workflows w
  set last_scheduled_slot = coalesce(p_slot, w.last_scheduled_slot), schedule_next = p_next
  where w.id = p_workflow_id and w.enabled and 'schedule' = any(w.triggers)
    and w.schedule is not null
    and (p_slot is null or (p_slot > w.schedule_anchor
         and (w.last_scheduled_slot is null or w.last_scheduled_slot < p_slot)))
    and exists (select from ops.projects p where p.id = w.project_id and p.status = 'active')
  returning w.* into v_workflow;
  if v_workflow.id is null or p_slot is null then
    return null;
  end if;
  insert into ops.runs (project_id, workflow_id, trigger_event, git_commit, git_ref, metadata)
  values (v_workflow.project_id, v_workflow.id, 'schedule', v_workflow.git_commit,
          v_workflow.git_ref,
          jsonb_strip_nulls(jsonb_build_object(
            'slot', p_slot, 'missed_slots', nullif(greatest(p_missed, 0), 0),
            'commit', v_workflow.git_commit, 'ref', v_workflow.git_ref, 'trigger', 'schedule',
            'workflow', v_workflow.workflow_type || '/' || v_workflow.name)))
  returning id into v_id;
  if p_missed > 0 then
    insert into ops.run_events (run_id, event_type, message, payload)
    values (v_id, 'warning',
            format('%s earlier slot(s) were missed while no worker ran; only the latest runs',
                   p_missed),
            jsonb_build_object('missed_slots', p_missed, 'slot', p_slot));
  end if;
  return v_id;
end;
$$;

revoke execute on function
  ops.unmet_need(text, uuid[]), ops.needs_met(text, uuid[]), ops.lane_busy(uuid, text),
  ops.cancel_for_failed_need(ops.runs), ops.next_claimable_run(),
  ops.due_schedules(timestamptz),
  ops.enqueue_scheduled_run(uuid, timestamptz, timestamptz, integer)
from public;
grant execute on function
  ops.next_claimable_run(), ops.due_schedules(timestamptz),
  ops.enqueue_scheduled_run(uuid, timestamptz, timestamptz, integer)
to service_role;

-- Wake the idle workers (LISTEN ops_runs) when a lane becomes free for a queued run of it.
-- (A need that succeeded does not notify: its worker claims the run it unblocked.)
create function ops.notify_runs_ready()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if exists (select from ops.runs q
             where q.project_id = new.project_id and q.concurrency_group = new.concurrency_group
               and q.status = 'queued') then
    perform pg_notify('ops_runs', 'ready');
  end if;
  return null;
end;
$$;

create trigger notify_runs_ready
  after update of status on ops.runs
  for each row when (
    new.status in ('succeeded', 'failed', 'canceled', 'queued')
    and new.concurrency_group is not null)
  execute function ops.notify_runs_ready();
