-- The seed's six RPC functions, same names, arguments and results. The state_change events they
-- used to insert are now written by the trigger of 0004 for every status change.
-- Workers call them as the service role (or the owner); they are not executable by PUBLIC.

create function ops.claim_next_run(p_worker_id text)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs;
begin
  if coalesce(p_worker_id, '') = '' then
    raise exception 'claim_next_run: worker id is required' using errcode = 'invalid_parameter_value';
  end if;

  update ops.runs r
  set status = 'claimed', claimed_by = p_worker_id, claimed_at = now(), updated_at = now()
  where r.id = (
    select q.id
    from ops.runs q
    where q.status = 'queued'
    order by q.created_at, q.id
    for update skip locked
    limit 1
  )
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

comment on function ops.claim_next_run is 'Atomically claim next queued run for worker execution';

create function ops.start_workflow_run(p_run_id uuid, p_worker_id text)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_started_at timestamptz;
begin
  update ops.runs
  set status = 'running', started_at = now(), updated_at = now()
  where id = p_run_id and status = 'claimed' and claimed_by = p_worker_id
  returning started_at into v_started_at;

  if not found then
    return jsonb_build_object('success', false,
                              'error', 'Run not found or not claimed by this worker');
  end if;
  return jsonb_build_object('success', true, 'started_at', v_started_at);
end;
$$;

comment on function ops.start_workflow_run is 'Mark claimed run as running (pre-execution validation)';

create function ops.complete_workflow_run(
  p_run_id uuid,
  p_exit_code int,
  p_error_message text default null
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs;
begin
  if p_exit_code is null then
    raise exception 'complete_workflow_run: exit code is required'
      using errcode = 'invalid_parameter_value';
  end if;

  update ops.runs
  set status = case when p_exit_code = 0 then 'succeeded' else 'failed' end,
      finished_at = now(),
      exit_code = p_exit_code,
      error_message = p_error_message,
      updated_at = now()
  where id = p_run_id and status = 'running'
  returning * into v_run;

  if v_run.id is null then
    return jsonb_build_object('success', false, 'error', 'Run not found or not in running state');
  end if;

  return jsonb_build_object(
    'success', true,
    'status', v_run.status,
    'finished_at', v_run.finished_at,
    'exit_code', v_run.exit_code
  );
end;
$$;

comment on function ops.complete_workflow_run is 'Mark running run as succeeded or failed based on exit code';

create function ops.append_run_log(
  p_run_id uuid,
  p_level text,
  p_message text,
  p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_timestamp timestamptz;
begin
  if p_level is null or p_level not in ('debug', 'info', 'warn', 'error') then
    return jsonb_build_object('success', false, 'error', 'Invalid log level');
  end if;

  insert into ops.run_logs (run_id, log_level, message, metadata)
  values (p_run_id, p_level, p_message, coalesce(p_metadata, '{}'::jsonb))
  returning timestamp into v_timestamp;

  return jsonb_build_object('success', true, 'timestamp', v_timestamp);
end;
$$;

comment on function ops.append_run_log is 'Append structured log entry to run logs';

create function ops.add_run_artifact(
  p_run_id uuid,
  p_artifact_key text,
  p_artifact_url text,
  p_content_type text default null,
  p_size_bytes bigint default null,
  p_checksum text default null,
  p_expires_at timestamptz default null,
  p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_artifact_id uuid;
begin
  insert into ops.run_artifacts (
    run_id, artifact_key, artifact_url, content_type,
    size_bytes, checksum, expires_at, metadata
  )
  values (
    p_run_id, p_artifact_key, p_artifact_url, p_content_type,
    p_size_bytes, p_checksum, p_expires_at, coalesce(p_metadata, '{}'::jsonb)
  )
  on conflict (run_id, artifact_key) do update set
    artifact_url = excluded.artifact_url,
    content_type = excluded.content_type,
    size_bytes = excluded.size_bytes,
    checksum = excluded.checksum,
    expires_at = excluded.expires_at,
    metadata = excluded.metadata
  returning id into v_artifact_id;

  insert into ops.run_events (run_id, event_type, message, payload)
  values (
    p_run_id,
    'info',
    format('Artifact added: %s', p_artifact_key),
    jsonb_build_object('artifact_key', p_artifact_key, 'artifact_id', v_artifact_id)
  );

  return jsonb_build_object('success', true, 'artifact_id', v_artifact_id);
end;
$$;

comment on function ops.add_run_artifact is 'Store artifact metadata for run (upsert on artifact_key)';

create function ops.list_queued_runs()
returns table (
  run_id uuid,
  project_id uuid,
  workflow_id uuid,
  run_number int,
  status text,
  created_at timestamptz,
  claimed_by text,
  claimed_at timestamptz
)
language sql
stable
set search_path = ''
as $$
  select id, project_id, workflow_id, run_number, status, created_at, claimed_by, claimed_at
  from ops.runs
  where status in ('queued', 'claimed')
  order by created_at, id;
$$;

comment on function ops.list_queued_runs is 'List all queued and claimed runs for admin view';

revoke execute on function
  ops.claim_next_run(text),
  ops.start_workflow_run(uuid, text),
  ops.complete_workflow_run(uuid, int, text),
  ops.append_run_log(uuid, text, text, jsonb),
  ops.add_run_artifact(uuid, text, text, text, bigint, text, timestamptz, jsonb),
  ops.list_queued_runs()
from public;

grant execute on function
  ops.claim_next_run(text),
  ops.start_workflow_run(uuid, text),
  ops.complete_workflow_run(uuid, int, text),
  ops.append_run_log(uuid, text, text, jsonb),
  ops.add_run_artifact(uuid, text, text, text, bigint, text, timestamptz, jsonb),
  ops.list_queued_runs()
to service_role;
