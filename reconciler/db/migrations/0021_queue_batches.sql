-- The queue in batches (issue 12): a worker claims, starts and finishes many runs per statement
-- and per commit, and the audit trail is written per statement, not per row.
-- * State-change events: one statement-level trigger with transition tables (REFERENCING OLD
--   TABLE / NEW TABLE) writes the state_change rows of every run a statement moved, with one
--   INSERT, instead of one trigger call and one INSERT per run. Same rows as 0004's trigger.
-- * Claim and start in one move: queued -> running is legal only as a leased claim-and-start
--   (a worker named, a fresh lease token, a lease that has not expired, the attempt counted):
--   the trigger records it as the two moves it is (queued -> claimed, claimed -> running), two
--   events in that order. Every other transition is what 0004 allows; the database still
--   refuses the rest for every writer.
-- * ops.claim_runs: up to N runs claimed and started by one statement (needs and lanes in force:
--   only claimable runs, at most one per lane, the lane's advisory lock and busy check as in
--   next_claimable_run); ops.finish_runs: a batch finished by one statement, each fenced by its
--   lease token. finish_and_claim_runs (0010) now uses both: one round trip, one commit, two
--   row writes per run.
-- * A run's id never changes (the transition tables pair old and new rows by it).

create or replace function ops.validate_run_status_transition()
returns trigger
language plpgsql
set search_path = ''  -- as 0018 pinned it (create or replace would drop the setting)
as $$
declare
  v_lapsed boolean := old.lease_expires_at is not null and old.lease_expires_at <= now();
  -- a claim and its start in one move: a worker, a fresh lease that holds, one more attempt
  v_claim_and_start boolean := old.status = 'queued' and new.status = 'running'
    and new.claimed_by is not null and new.lease_token is not null
    and new.lease_token is distinct from old.lease_token
    and new.lease_expires_at > now() and new.attempt = old.attempt + 1;
begin
  if new.id is distinct from old.id then
    raise exception 'Invalid update: a run''s id cannot change (run %)', old.id
      using errcode = 'check_violation';
  end if;
  if old.status in ('succeeded', 'failed', 'canceled') then
    raise exception 'Invalid transition: final states cannot transition (run % is %)',
      old.id, old.status using errcode = 'check_violation';
  end if;

  if new.status is distinct from old.status and not (
       (old.status = 'queued' and new.status in ('claimed', 'canceled'))
    or v_claim_and_start
    or (old.status = 'claimed' and new.status in ('running', 'canceled'))
    or (old.status = 'running' and new.status in ('succeeded', 'failed', 'canceled'))
    or (old.status in ('claimed', 'running') and new.status = 'queued' and v_lapsed)
    or (old.status = 'claimed' and new.status = 'failed' and v_lapsed)
  ) then
    raise exception using
      message = format('Invalid transition: %s cannot go to %s%s', old.status, new.status,
        case when new.status = 'queued' or (old.status = 'claimed' and new.status = 'failed')
             then ' (only once its lease expired)'
             when old.status = 'queued' and new.status = 'running'
             then ' (only as a claim with a fresh lease)' else '' end),
      errcode = 'check_violation';
  end if;

  if new.status in ('claimed', 'running') and new.claimed_by is null then
    raise exception 'Invalid transition: a claimed run names its worker (claimed_by)'
      using errcode = 'check_violation';
  end if;

  if new.status is distinct from old.status then
    -- the moment of the move, which the statement's events are stamped with (so a move made
    -- by a trigger of this one, written by an earlier statement's trigger, still comes after)
    new.updated_at := clock_timestamp();
    case new.status
      when 'claimed' then new.claimed_at := coalesce(new.claimed_at, now());
      when 'running' then
        new.claimed_at := coalesce(new.claimed_at, now());
        new.started_at := coalesce(new.started_at, now());
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

-- The state_change rows of a statement's moves, in one INSERT, each stamped with the moment of
-- its move (updated_at, set above), not of the INSERT: a move that a row trigger makes while
-- the statement runs (a superseded re-queue) is written first but stamped later, so
-- `order by created_at` is the order of the moves. A claim-and-start writes the claim first,
-- the start one microsecond later.
create function ops.record_run_status_changes()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  insert into ops.run_events (run_id, event_type, message, payload, created_at)
  select n.id, 'state_change',
    case m.status
      when 'claimed' then 'Run claimed by worker'
      when 'running' then 'Run started execution'
      when 'canceled' then 'Run canceled'
      when 'queued' then 'Run re-queued: its lease expired'
      else format('Run completed with status: %s', m.status)
    end,
    jsonb_strip_nulls(jsonb_build_object(
      'previous_status', m.previous,
      'new_status', m.status,
      'worker_id', coalesce(n.claimed_by, o.claimed_by),
      'attempt', n.attempt,
      'exit_code', n.exit_code,
      'error_message', n.error_message
    )),
    n.updated_at + make_interval(secs => m.step * 0.000001)
  from new_runs n
  join old_runs o on o.id = n.id
  cross join lateral (
    select o.status as previous, n.status, 0 as step
    where not (o.status = 'queued' and n.status = 'running')
    union all
    select * from (values ('queued', 'claimed', 0), ('claimed', 'running', 1)) s
    where o.status = 'queued' and n.status = 'running'
  ) m
  where o.status is distinct from n.status
  order by n.id, m.step;
  return null;
end;
$$;

drop trigger record_run_status_change on ops.runs;
create trigger record_run_status_changes
  after update on ops.runs
  referencing old table as old_runs new table as new_runs
  for each statement execute function ops.record_run_status_changes();

-- Up to p_want runs claimed and started at once (queued -> running, two events each), in claim
-- order, by one UPDATE. The runs are those next_claimable_run would give: queued, not waiting
-- for a need, and of a lane only when it is the lane's head and the lane is free: at most one
-- run per lane, under the lane's advisory lock, checked again under it. Returns what the
-- worker needs of each run.
create function ops.claim_runs(
  p_worker_id text, p_lease_seconds integer, p_want integer,
  p_after_created timestamptz default null, p_after_id uuid default null
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_all uuid[] := '{}';
  v_all_projects uuid[] := '{}';
  v_all_groups text[] := '{}';
  v_all_created timestamptz[] := '{}';
  v_found uuid[];
  v_projects uuid[];
  v_groups text[];
  v_created timestamptz[];
  v_ids uuid[];
  v_lanes uuid[];
  v_from_created timestamptz := coalesce(p_after_created, '-infinity');
  v_from_id uuid := case when p_after_created is null then '00000000-0000-0000-0000-000000000000'
                         else coalesce(p_after_id, '00000000-0000-0000-0000-000000000000') end;
  v_claims jsonb;
begin
  if coalesce(p_worker_id, '') = '' or coalesce(p_lease_seconds, 0) < 1 then
    raise exception 'claim_runs: a worker id and a lease of at least 1 second are required'
      using errcode = 'invalid_parameter_value';
  end if;
  if coalesce(p_want, 0) < 1 then
    return '[]'::jsonb;
  end if;
  -- Pass 1 scans from the hint (the last run this worker claimed: the runs before it were
  -- taken, so the scan does not wade through their index entries again); pass 2, only when
  -- pass 1 came up short, from the start of the queue.
  for v_pass in 1 .. 2 loop
    exit when v_pass = 2 and (p_after_created is null or cardinality(v_all) >= p_want);
    if v_pass = 2 then
      v_from_created := '-infinity';
      v_from_id := '00000000-0000-0000-0000-000000000000';
    end if;
    with picked as materialized (
      select q.id, q.project_id, q.concurrency_group, q.created_at
      from ops.runs q
      where q.status = 'queued' and not q.blocked
        and (q.created_at, q.id) > (v_from_created, v_from_id)
        and q.id <> all(v_all)
        and (q.concurrency_group is null or not exists (  -- 0020's ops.lane_ahead, inline
          select from ops.runs o
          where o.project_id = q.project_id and o.concurrency_group = q.concurrency_group
            and (o.status in ('claimed', 'running')
                 or (o.status = 'queued' and not o.blocked
                     and (o.created_at, o.id) < (q.created_at, q.id)))))
      order by q.created_at, q.id
      for update of q skip locked
      limit p_want - cardinality(v_all)
    )
    select coalesce(array_agg(c.id), '{}'), coalesce(array_agg(c.project_id), '{}'),
           coalesce(array_agg(c.concurrency_group), '{}'), coalesce(array_agg(c.created_at), '{}')
    into v_found, v_projects, v_groups, v_created
    from picked c;
    v_all := v_all || v_found;
    v_all_projects := v_all_projects || v_projects;
    v_all_groups := v_all_groups || v_groups;
    v_all_created := v_all_created || v_created;
  end loop;

  -- the runs of no lane, and the first run of each lane in the batch
  select coalesce(array_agg(u.id) filter (where u.grp is null), '{}') into v_ids
  from unnest(v_all, v_all_groups) as u(id, grp);
  select coalesce(array_agg(h.id), '{}'), coalesce(array_agg(h.project_id), '{}'),
         coalesce(array_agg(h.grp), '{}'), coalesce(array_agg(h.created_at), '{}')
  into v_lanes, v_projects, v_groups, v_created
  from (
    select distinct on (u.project_id, u.grp) u.*
    from unnest(v_all, v_all_projects, v_all_groups, v_all_created)
      as u(id, project_id, grp, created_at)
    where u.grp is not null
    order by u.project_id, u.grp, u.created_at, u.id
  ) h;

  -- a lane's run only under the lane's lock, checked again under it (a statement of its own:
  -- it sees what the lock's last holder committed); the rule of 0020's next_claimable_run
  for i in 1 .. coalesce(cardinality(v_lanes), 0) loop
    if pg_try_advisory_xact_lock(hashtextextended(v_projects[i]::text || '/' || v_groups[i], 14))
    then
      if ops.lane_ahead(v_projects[i], v_groups[i], v_created[i], v_lanes[i]) then
        perform pg_notify('ops_runs', 'ready');  -- the claimer of the older run may retry
      else
        v_ids := v_ids || v_lanes[i];
      end if;
    end if;
  end loop;
  if cardinality(v_ids) = 0 then
    return '[]'::jsonb;
  end if;

  with moved as (
    update ops.runs r
    set status = 'running', claimed_by = p_worker_id, claimed_at = now(), started_at = now(),
        attempt = r.attempt + 1, lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    where r.id = any(v_ids)
    returning r.*
  )
  select coalesce(jsonb_agg(jsonb_build_object(
      'run_id', m.id, 'project_id', m.project_id, 'workflow_id', m.workflow_id,
      'run_number', m.run_number, 'attempt', m.attempt,
      'lease_token', m.lease_token, 'lease_expires_at', m.lease_expires_at,
      'metadata', m.metadata, 'project', p.slug, 'type', w.workflow_type,
      'workflow', w.name, 'config', w.config, 'commit', m.git_commit, 'ref', m.git_ref,
      'repository_url', m.repository_url, 'commit_sha', m.commit_sha, 'created_at', m.created_at
    ) order by m.created_at, m.id), '[]'::jsonb)
  into v_claims
  from moved m
  join ops.workflows w on w.id = m.workflow_id
  join ops.projects p on p.id = w.project_id;
  return v_claims;
end;
$$;

-- A batch of runs finished by one UPDATE, each only while its lease token holds it (as
-- finish_run): canceled when a cancel was requested, else succeeded on exit code 0, else
-- failed. p_finished: [{run_id, lease_token, exit_code, error}]. Returns, in the same order,
-- {ok, status} or {ok: false, error: 'lease lost'} for each.
create function ops.finish_runs(p_finished jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_answers jsonb;
begin
  with done as (
    select d.*
    from rows from (jsonb_to_recordset(coalesce(p_finished, '[]'::jsonb))
                      as (run_id uuid, lease_token uuid, exit_code integer, error text))
      with ordinality as d(run_id, lease_token, exit_code, error, n)
  ), moved as (
    update ops.runs r
    set status = case
          when r.cancel_requested_at is not null then 'canceled'
          when r.status = 'claimed' then 'failed'
          when d.exit_code = 0 then 'succeeded'
          else 'failed' end,
        exit_code = d.exit_code, error_message = d.error
    from done d
    where r.id = d.run_id and r.lease_token = d.lease_token
      and r.status in ('claimed', 'running') and r.lease_expires_at > now()
    returning r.id, r.status
  )
  select coalesce(jsonb_agg(case when m.id is null
                                 then jsonb_build_object('ok', false, 'error', 'lease lost')
                                 else jsonb_build_object('ok', true, 'status', m.status) end
                            order by d.n), '[]'::jsonb)
  into v_answers
  from done d left join moved m on m.id = d.run_id;
  return v_answers;
end;
$$;

-- The worker's round trip: the finishes, then the claims (from the worker's hint, see
-- claim_runs), each one statement; one commit.
create function ops.finish_and_claim_runs(
  p_finished jsonb, p_worker_id text, p_lease_seconds integer, p_want integer,
  p_after_created timestamptz, p_after_id uuid
)
returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  return jsonb_build_object(
    'finished', ops.finish_runs(p_finished),
    'next', ops.claim_runs(p_worker_id, p_lease_seconds, p_want, p_after_created, p_after_id)
  );
end;
$$;

-- Replaces 0010's loop of finish_run and claim_run calls: the same, with no hint.
create or replace function ops.finish_and_claim_runs(
  p_finished jsonb, p_worker_id text, p_lease_seconds integer, p_want integer
)
returns jsonb
language sql
set search_path = ''
as $$
  select ops.finish_and_claim_runs(p_finished, p_worker_id, p_lease_seconds, p_want, null, null);
$$;

revoke execute on function
  ops.record_run_status_changes(),
  ops.claim_runs(text, integer, integer, timestamptz, uuid), ops.finish_runs(jsonb),
  ops.finish_and_claim_runs(jsonb, text, integer, integer, timestamptz, uuid)
from public;
grant execute on function
  ops.claim_runs(text, integer, integer, timestamptz, uuid), ops.finish_runs(jsonb),
  ops.finish_and_claim_runs(jsonb, text, integer, integer, timestamptz, uuid)
to service_role;
