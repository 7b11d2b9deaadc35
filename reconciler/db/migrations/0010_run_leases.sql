-- Leases (seed review, defect 8): a run claimed by a worker that dies must not stay claimed or
-- running forever, and a worker that lost its run must not write to it any more.
-- * A claim takes a lease: a fresh random token (the fencing token) and an expiry. Heartbeats
--   extend it. Every write of a worker for a run (heartbeat, start, logs, artifacts, finish)
--   names the token and is refused once the lease expired or moved on.
-- * Any worker re-queues runs whose lease expired (`reap_expired_runs`, every half lease),
--   or fails them after `max_attempts` claims, with the reason. Each move writes run_events.
-- * Cancellation: a queued run is canceled at once; a claimed or running one is marked, and its
--   worker learns it from the heartbeat, stops the steps and finishes it as canceled.
-- * Wake-ups: NOTIFY ops_runs when runs are queued (workers LISTEN, and poll as a fallback).
-- The lease columns are in 0003, the transitions of a lapsed lease in 0004. The seed's six
-- functions stay as they were (no lease: legacy callers keep working).

create index idx_ops_runs_lease_expiry on ops.runs(lease_expires_at)
  where status in ('claimed', 'running');

create function ops.reap_expired_runs(p_limit integer default 100)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_count integer;
  v_requeued integer;
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
  return v_count;
end;
$$;

create function ops.claim_run(
  p_worker_id text, p_lease_seconds integer default 30, p_start boolean default false
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs;
begin
  if coalesce(p_worker_id, '') = '' or coalesce(p_lease_seconds, 0) < 1 then
    raise exception 'claim_run: a worker id and a lease of at least 1 second are required'
      using errcode = 'invalid_parameter_value';
  end if;
  update ops.runs r
  set status = 'claimed', claimed_by = p_worker_id, claimed_at = now(),
      attempt = r.attempt + 1, lease_token = gen_random_uuid(),
      lease_expires_at = now() + make_interval(secs => p_lease_seconds)
  where r.id = (
    select q.id from ops.runs q
    where q.status = 'queued'
    order by q.created_at, q.id
    for update skip locked
    limit 1
  )
  returning r.* into v_run;

  if v_run.id is null then
    return null;
  end if;
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
      'workflow', w.name, 'config', w.config
    )
    from ops.workflows w join ops.projects p on p.id = w.project_id
    where w.id = v_run.workflow_id
  );
end;
$$;

-- The lease check every fenced write makes: the row, locked, if the token still holds it.
create function ops.leased_run(p_run_id uuid, p_lease_token uuid, p_statuses text[])
returns ops.runs
language sql
set search_path = ''
as $$
  select r.* from ops.runs r
  where r.id = p_run_id and r.lease_token = p_lease_token and r.status = any(p_statuses)
    and r.lease_expires_at > now()
  for update;
$$;

create function ops.heartbeat_run(
  p_run_id uuid, p_lease_token uuid, p_lease_seconds integer default 30
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs := ops.leased_run(p_run_id, p_lease_token, array['claimed', 'running']);
begin
  if v_run.id is null then
    return jsonb_build_object('ok', false, 'error', 'lease lost');
  end if;
  update ops.runs set lease_expires_at = now() + make_interval(secs => p_lease_seconds)
  where id = p_run_id;
  return jsonb_build_object('ok', true,
                            'cancel_requested', v_run.cancel_requested_at is not null);
end;
$$;

create function ops.start_run(p_run_id uuid, p_lease_token uuid)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs := ops.leased_run(p_run_id, p_lease_token, array['claimed']);
begin
  if v_run.id is null then
    return jsonb_build_object('ok', false, 'error', 'lease lost');
  end if;
  if v_run.cancel_requested_at is not null then
    return jsonb_build_object('ok', false, 'error', 'cancel requested', 'cancel_requested', true);
  end if;
  update ops.runs set status = 'running' where id = p_run_id;
  return jsonb_build_object('ok', true);
end;
$$;

create function ops.append_run_logs(p_run_id uuid, p_lease_token uuid, p_lines jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs := ops.leased_run(p_run_id, p_lease_token, array['running']);
begin
  if v_run.id is null then
    return jsonb_build_object('ok', false, 'error', 'lease lost');
  end if;
  if exists (select from jsonb_array_elements(p_lines) l
             where coalesce(l ->> 'level', 'info') not in ('debug', 'info', 'warn', 'error')) then
    return jsonb_build_object('ok', false, 'error', 'Invalid log level');
  end if;
  insert into ops.run_logs (run_id, log_level, message, metadata)
  select p_run_id, coalesce(l ->> 'level', 'info'), coalesce(l ->> 'message', ''),
         coalesce(l -> 'metadata', '{}'::jsonb)
  from jsonb_array_elements(p_lines) with ordinality as lines(l, n)
  order by n;
  return jsonb_build_object('ok', true, 'count', jsonb_array_length(p_lines));
end;
$$;

create function ops.record_run_artifact(
  p_run_id uuid,
  p_lease_token uuid,
  p_artifact_key text,
  p_artifact_url text,
  p_content_type text,
  p_size_bytes bigint,
  p_checksum text,
  p_expires_at timestamptz,
  p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs := ops.leased_run(p_run_id, p_lease_token, array['running']);
begin
  if v_run.id is null then
    return jsonb_build_object('ok', false, 'error', 'lease lost');
  end if;
  return ops.add_run_artifact(p_run_id, p_artifact_key, p_artifact_url, p_content_type,
                              p_size_bytes, p_checksum, p_expires_at, p_metadata)
         || jsonb_build_object('ok', true);
end;
$$;

create function ops.finish_run(
  p_run_id uuid, p_lease_token uuid, p_exit_code integer, p_error_message text default null
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs := ops.leased_run(p_run_id, p_lease_token, array['claimed', 'running']);
  v_status text;
begin
  if v_run.id is null then
    return jsonb_build_object('ok', false, 'error', 'lease lost');
  end if;
  v_status := case
    when v_run.cancel_requested_at is not null then 'canceled'
    when v_run.status = 'claimed' then 'failed'
    when p_exit_code = 0 then 'succeeded'
    else 'failed' end;
  update ops.runs
  set status = v_status, exit_code = p_exit_code, error_message = p_error_message
  where id = p_run_id;
  return jsonb_build_object('ok', true, 'status', v_status);
end;
$$;

-- A worker's usual step: finish its run and take the next, in one round trip (one commit).
create function ops.finish_and_claim_run(
  p_run_id uuid, p_lease_token uuid, p_exit_code integer, p_error_message text,
  p_worker_id text, p_lease_seconds integer default 30
)
returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  return jsonb_build_object(
    'finished', ops.finish_run(p_run_id, p_lease_token, p_exit_code, p_error_message),
    'next', ops.claim_run(p_worker_id, p_lease_seconds, true)
  );
end;
$$;

-- The same for a worker with several runs in flight: finish those done, claim up to p_want
-- more (claimed and running), all in one round trip and one commit.
create function ops.finish_and_claim_runs(
  p_finished jsonb, p_worker_id text, p_lease_seconds integer, p_want integer
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_done jsonb := '[]'::jsonb;
  v_next jsonb := '[]'::jsonb;
  v_finished jsonb;
  v_claim jsonb;
begin
  for v_finished in select value from jsonb_array_elements(p_finished) loop
    v_done := v_done || jsonb_build_array(ops.finish_run(
      (v_finished ->> 'run_id')::uuid, (v_finished ->> 'lease_token')::uuid,
      (v_finished ->> 'exit_code')::integer, v_finished ->> 'error'));
  end loop;
  for i in 1 .. greatest(p_want, 0) loop
    v_claim := ops.claim_run(p_worker_id, p_lease_seconds, true);
    exit when v_claim is null;
    v_next := v_next || jsonb_build_array(v_claim);
  end loop;
  return jsonb_build_object('finished', v_done, 'next', v_next);
end;
$$;

create function ops.cancel_run(p_run_id uuid, p_reason text default null)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_status text;
begin
  select status into v_status from ops.runs where id = p_run_id for update;
  if v_status is null then
    return jsonb_build_object('ok', false, 'error', 'no such run');
  elsif v_status = 'queued' then
    update ops.runs set status = 'canceled', error_message = coalesce(p_reason, 'canceled')
    where id = p_run_id;
    return jsonb_build_object('ok', true, 'status', 'canceled');
  elsif v_status in ('claimed', 'running') then
    update ops.runs set cancel_requested_at = coalesce(cancel_requested_at, now()),
                        error_message = coalesce(p_reason, 'canceled')
    where id = p_run_id;
    return jsonb_build_object('ok', true, 'status', 'cancel_requested');
  end if;
  return jsonb_build_object('ok', false, 'error', format('the run is already %s', v_status));
end;
$$;

create function ops.notify_runs_queued()
returns trigger
language plpgsql
as $$
begin
  perform pg_notify('ops_runs', 'queued');
  return null;
end;
$$;

create trigger notify_runs_queued
  after insert on ops.runs
  for each statement execute function ops.notify_runs_queued();

revoke execute on function
  ops.reap_expired_runs(integer), ops.claim_run(text, integer, boolean),
  ops.leased_run(uuid, uuid, text[]), ops.heartbeat_run(uuid, uuid, integer),
  ops.start_run(uuid, uuid), ops.append_run_logs(uuid, uuid, jsonb),
  ops.record_run_artifact(uuid, uuid, text, text, text, bigint, text, timestamptz, jsonb),
  ops.finish_run(uuid, uuid, integer, text), ops.cancel_run(uuid, text),
  ops.finish_and_claim_run(uuid, uuid, integer, text, text, integer),
  ops.finish_and_claim_runs(jsonb, text, integer, integer)
from public;
grant execute on function
  ops.reap_expired_runs(integer), ops.claim_run(text, integer, boolean),
  ops.leased_run(uuid, uuid, text[]), ops.heartbeat_run(uuid, uuid, integer),
  ops.start_run(uuid, uuid), ops.append_run_logs(uuid, uuid, jsonb),
  ops.record_run_artifact(uuid, uuid, text, text, text, bigint, text, timestamptz, jsonb),
  ops.finish_run(uuid, uuid, integer, text), ops.cancel_run(uuid, text),
  ops.finish_and_claim_run(uuid, uuid, integer, text, text, integer),
  ops.finish_and_claim_runs(jsonb, text, integer, integer)
to service_role;
