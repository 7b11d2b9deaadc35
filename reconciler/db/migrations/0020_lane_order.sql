-- Lanes keep commit order under concurrency and kill -9 (issue 10's lane defect).
-- * 0014's claim took the first queued run `for update skip locked`: when an older run of a
--   lane was row-locked by another transaction (a claimer that had not taken the lane yet, the
--   reaper, a cancel, an edit), the claim skipped it, took the newer run of the lane and started
--   it; the older commit ran after it. A run of a lane is now claimable only when no run of
--   its lane is claimed or running AND no run of its lane is ahead of it in the queue (queued,
--   not waiting for a need, earlier in claim order), locked or not. A run waiting for a need
--   keeps no place: it cannot hold up the runs it may itself need (see docs/reference.md).
-- * A run of a lane that goes back to the queue (its worker died, the lease expired) while a
--   newer push or scheduled run of its workflow exists is superseded by it at once, the reason
--   naming the newer commit, as a queued run is when a newer commit joins its lane (0014's
--   place_run_in_pipeline): the lane deploys the newest commit, never the older one after it.

-- Whether a run of a lane must wait: its lane is held (a run claimed or running), or a run of
-- its lane is ahead of it in the queue (queued, not waiting for a need, earlier in claim order).
-- One snapshot for both: a run moving from one to the other (a claim, a re-queue) is seen in
-- one of them. Locked rows count: no `skip locked` here.
create function ops.lane_ahead(
  p_project_id uuid, p_group text, p_created_at timestamptz, p_id uuid
)
returns boolean
language sql
stable
set search_path = ''
as $$
  select exists (
    select from ops.runs o
    where o.project_id = p_project_id and o.concurrency_group = p_group
      and o.status in ('claimed', 'running')
  ) or exists (
    select from ops.runs o
    where o.status = 'queued' and not o.blocked
      and (o.created_at, o.id) < (p_created_at, p_id)
      and o.project_id = p_project_id and o.concurrency_group = p_group
  );
$$;

-- Replaces 0014's: a run of a lane is taken only at the head of its lane. The check runs once
-- before the lane's advisory lock (a run that is not the head does not take the lock others
-- need) and once under it (what another transaction committed in between counts).
create or replace function ops.next_claimable_run()
returns uuid
language plpgsql
set search_path = ''
as $$
declare
  v_skip uuid[] := '{}';
  v_id uuid;
  v_project uuid;
  v_group text;
  v_created timestamptz;
begin
  loop
    select q.id, q.project_id, q.concurrency_group, q.created_at
    into v_id, v_project, v_group, v_created
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
    if not ops.lane_ahead(v_project, v_group, v_created, v_id)
       and pg_try_advisory_xact_lock(hashtextextended(v_project::text || '/' || v_group, 14)) then
      if not ops.lane_ahead(v_project, v_group, v_created, v_id) then
        return v_id;
      end if;
      -- the lock is held until this transaction ends: the claimer of the run ahead may have
      -- been refused it meanwhile; wake the workers when it is released (NOTIFY at commit)
      perform pg_notify('ops_runs', 'ready');
    end if;
    v_skip := v_skip || v_id;
  end loop;
end;
$$;

-- A run of a lane put back in the queue (its lease expired; whoever re-queues it) while a newer
-- push or scheduled run of its workflow waits or has started: that newer commit is what the lane
-- runs, so this one is superseded, as a queued one is when the newer commit joins the lane.
create function ops.supersede_requeued_run()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_newer ops.runs;
begin
  select n.* into v_newer
  from ops.runs n
  where n.workflow_id = new.workflow_id and n.run_number > new.run_number
    and n.trigger_event in ('push', 'schedule')
    and (n.status <> 'canceled' or n.claimed_at is not null)  -- not one superseded unstarted
  order by n.run_number desc
  limit 1;
  if v_newer.id is null then
    return null;
  end if;
  update ops.runs
  set status = 'canceled',
      error_message = format('superseded by commit %s (run #%s) in lane %s',
                             coalesce(left(v_newer.git_commit, 12), '(none)'),
                             v_newer.run_number, new.concurrency_group)
  where id = new.id and status = 'queued';
  if found then
    insert into ops.run_events (run_id, event_type, message, payload)
    values (new.id, 'info',
            format('Superseded by commit %s (run #%s)',
                   coalesce(left(v_newer.git_commit, 12), '(none)'), v_newer.run_number),
            jsonb_build_object('superseded_by', v_newer.id, 'commit', v_newer.git_commit,
                               'lane', new.concurrency_group, 'requeued', true));
  end if;
  return null;
end;
$$;

create trigger supersede_requeued_run
  after update of status on ops.runs
  for each row when (
    old.status in ('claimed', 'running') and new.status = 'queued'
    and new.concurrency_group is not null)
  execute function ops.supersede_requeued_run();

-- The claim functions run as their caller (a worker connecting as service_role): it must be
-- able to call the check (0014's lane_busy was not granted, so such a worker could not claim a
-- run of a lane).
revoke execute on function
  ops.lane_ahead(uuid, text, timestamptz, uuid), ops.supersede_requeued_run()
from public;
grant execute on function ops.lane_ahead(uuid, text, timestamptz, uuid) to service_role;
