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

create trigger record_run_created
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

-- A manual start: a new queued run of the workflow for a commit (default: the one the last
-- apply recorded) and ref (default: the workflow's branch). Returns the run's id.
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
    v_commit := v_workflow.git_commit;
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
