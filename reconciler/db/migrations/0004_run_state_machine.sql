-- The run state machine, enforced by the database for every writer:
--   queued -> claimed -> running -> succeeded | failed; canceled from any non-final state;
--   claimed | running -> queued and claimed -> failed only once the run's lease expired
--   (a worker died: 0010 re-queues the run, or fails it after max_attempts).
-- * A run is created `queued` with no claim, start, finish or exit code (defect 6: the seed let
--   a developer insert a run already `succeeded`).
-- * Every status change writes a `state_change` row to ops.run_events, whoever made it, so the
--   audit trail cannot be skipped.
-- * run_number is 1, 2, 3 ... per project, without gaps under concurrent inserts (defect 7).

create function ops.assign_run_number()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_last integer;
begin
  -- The project row lock serialises run creation per project; a rollback returns the number.
  select last_run_number into v_last
  from ops.projects
  where id = new.project_id
  for no key update;

  if not found then
    return new;  -- the foreign key reports the missing project
  end if;

  new.run_number := v_last + 1;
  -- A duplicate idempotency key will not be inserted (ON CONFLICT DO NOTHING, or a unique
  -- violation): keep the counter where it is so the numbers stay gapless.
  if new.idempotency_key is not null
     and exists (select from ops.runs r where r.idempotency_key = new.idempotency_key) then
    return new;
  end if;

  update ops.projects set last_run_number = v_last + 1 where id = new.project_id;
  return new;
end;
$$;

comment on function ops.assign_run_number() is 'Assign the next per-project run number';

create function ops.validate_run_insert()
returns trigger
language plpgsql
as $$
begin
  if new.status <> 'queued' then
    raise exception 'Invalid run: a new run must be queued, not %', new.status
      using errcode = 'check_violation';
  end if;
  if num_nonnulls(new.claimed_by, new.claimed_at, new.started_at, new.finished_at,
                  new.exit_code, new.lease_token, new.lease_expires_at) > 0 then
    raise exception 'Invalid run: a new run has no claim, start, finish or exit code'
      using errcode = 'check_violation';
  end if;
  return new;
end;
$$;

create function ops.validate_run_status_transition()
returns trigger
language plpgsql
as $$
declare
  v_lapsed boolean := old.lease_expires_at is not null and old.lease_expires_at <= now();
begin
  if old.status in ('succeeded', 'failed', 'canceled') then
    raise exception 'Invalid transition: final states cannot transition (run % is %)',
      old.id, old.status using errcode = 'check_violation';
  end if;

  if new.status is distinct from old.status and not (
       (old.status = 'queued' and new.status in ('claimed', 'canceled'))
    or (old.status = 'claimed' and new.status in ('running', 'canceled'))
    or (old.status = 'running' and new.status in ('succeeded', 'failed', 'canceled'))
    or (old.status in ('claimed', 'running') and new.status = 'queued' and v_lapsed)
    or (old.status = 'claimed' and new.status = 'failed' and v_lapsed)
  ) then
    raise exception using
      message = format('Invalid transition: %s cannot go to %s%s', old.status, new.status,
        case when new.status = 'queued' or (old.status = 'claimed' and new.status = 'failed')
             then ' (only once its lease expired)' else '' end),
      errcode = 'check_violation';
  end if;

  if new.status = 'claimed' and new.claimed_by is null then
    raise exception 'Invalid transition: a claimed run names its worker (claimed_by)'
      using errcode = 'check_violation';
  end if;

  if new.status is distinct from old.status then
    new.updated_at := now();
    case new.status
      when 'claimed' then new.claimed_at := coalesce(new.claimed_at, now());
      when 'running' then new.started_at := coalesce(new.started_at, now());
      when 'queued' then
        new.claimed_by := null;
        new.claimed_at := null;
        new.started_at := null;
        new.lease_token := null;
        new.lease_expires_at := null;
      else
        new.finished_at := coalesce(new.finished_at, now());
        new.lease_expires_at := null;
    end case;
  end if;
  return new;
end;
$$;

create function ops.record_run_status_change()
returns trigger
language plpgsql
as $$
begin
  insert into ops.run_events (run_id, event_type, message, payload)
  values (
    new.id,
    'state_change',
    case new.status
      when 'claimed' then 'Run claimed by worker'
      when 'running' then 'Run started execution'
      when 'canceled' then 'Run canceled'
      when 'queued' then 'Run re-queued: its lease expired'
      else format('Run completed with status: %s', new.status)
    end,
    jsonb_strip_nulls(jsonb_build_object(
      'previous_status', old.status,
      'new_status', new.status,
      'worker_id', coalesce(new.claimed_by, old.claimed_by),
      'attempt', new.attempt,
      'exit_code', new.exit_code,
      'error_message', new.error_message
    ))
  );
  return null;
end;
$$;

create trigger assign_run_number
  before insert on ops.runs
  for each row execute function ops.assign_run_number();

create trigger enforce_run_insert_state
  before insert on ops.runs
  for each row execute function ops.validate_run_insert();

create trigger enforce_run_status_transition
  before update on ops.runs
  for each row execute function ops.validate_run_status_transition();

create trigger record_run_status_change
  after update of status on ops.runs
  for each row when (old.status is distinct from new.status)
  execute function ops.record_run_status_change();

comment on trigger enforce_run_status_transition on ops.runs is
  'Enforce valid run status state machine transitions';

-- run_events is append-only: rows are never edited (they go only with their run).
create function ops.refuse_run_event_update()
returns trigger
language plpgsql
as $$
begin
  raise exception 'ops.run_events is append-only' using errcode = 'insufficient_privilege';
end;
$$;

create trigger run_events_append_only
  before update on ops.run_events
  for each row execute function ops.refuse_run_event_update();
