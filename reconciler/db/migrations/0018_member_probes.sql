-- Hardening against members, part two (issue 8, found by trying it): what 0011 left open.
-- * A login that inherits `authenticated` (how plain PostgreSQL gives members logins) but
--   sends no JWT was taken for the service role by ops.require_run_operator(): it tested only
--   `SET ROLE`, so such a login started and canceled runs of every project. The caller is now
--   the role in effect for the session (SET ROLE, else the login), and only the owner of the
--   ops schema (the CLI) or service_role acts without a signed-in user.
-- * A member's own insert into ops.runs was recorded as `push` (the column's default) with no
--   requester: the history claimed the apply had queued it. A member's insert is now always
--   `manual`, requested by the signed-in user (none: refused), never a retry.
-- * Members could name a workflow what the files never may (control characters, ANSI escapes,
--   a final newline or space), which printed as another workflow or rewrote an operator's
--   terminal. The documented pattern now holds in the database for every new or renamed row
--   (NOT VALID: rows written before stay readable).

create function ops.caller_is_reconciler()
returns boolean
language sql
stable
set search_path = ''
as $$
  with caller as (
    select coalesce(nullif(pg_catalog.current_setting('role', true), 'none'),
                    session_user::text) as name
  )
  select pg_catalog.pg_has_role(c.name,
           (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'ops'), 'MEMBER')
      or pg_catalog.pg_has_role(c.name, 'service_role', 'MEMBER')
  from caller c;
$$;

comment on function ops.caller_is_reconciler() is
  'True when the session acts as the reconciler (the ops schema''s owner) or service_role, '
  'even inside a security definer function (whose current_user is its owner)';

create or replace function ops.require_run_operator(p_project_id uuid, p_action text)
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
    if not ops.caller_is_reconciler() then
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

create function ops.stamp_member_run()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if not ops.acting_as_member() then
    return new;
  end if;
  new.requested_by := ops.current_user_id();
  if new.requested_by is null then
    raise exception 'Invalid run: a member''s run needs a signed-in user (a JWT sub)'
      using errcode = 'insufficient_privilege';
  end if;
  new.trigger_event := 'manual';
  new.retry_of := null;
  return new;
end;
$$;

create trigger stamp_member_run before insert on ops.runs
  for each row execute function ops.stamp_member_run();

alter table ops.workflows
  add constraint workflows_name_format
  check (name ~ '^[A-Za-z0-9]([A-Za-z0-9 ._-]*[A-Za-z0-9._-])?$' and length(name) <= 100)
  not valid;

-- * ops.remove_member() locked the membership (FOR UPDATE) before asking who called: anyone
--   signed in, of any project, could hold another project's membership rows locked in an open
--   transaction. The caller's role is now checked first; only then is the row locked (and read
--   again, as it may have changed meanwhile).
create or replace function ops.remove_member(p_membership_id uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_member ops.project_memberships;
  v_role text;
begin
  v_role := ops.current_user_role(
    (select m.project_id from ops.project_memberships m where m.id = p_membership_id));
  if v_role is null then
    return false;  -- no such membership, or not one of the caller's projects
  end if;
  select * into v_member from ops.project_memberships where id = p_membership_id for update;
  if v_member.id is null then
    return false;  -- removed meanwhile
  end if;
  if not (v_role = 'owner' or (v_role = 'admin' and v_member.role <> 'owner')) then
    raise exception 'only an owner removes an owner, and an owner or admin another member'
      using errcode = 'insufficient_privilege';
  end if;
  if v_member.role = 'owner' and ops.other_owners(v_member.project_id, v_member.id) = 0 then
    raise exception using
      errcode = 'check_violation',
      message = 'a project keeps at least one owner: this is its last one',
      hint = 'make another member owner first';
  end if;
  delete from ops.project_memberships where id = p_membership_id;
  return true;
end;
$$;

-- * Trigger functions that still resolved names through the caller's search_path now have an
--   empty one (every name in them is qualified): on Supabase, `authenticated` and `anon` may
--   create objects in `public`, which is on the reconciler's own search_path when it fires them.
alter function ops.validate_run_insert() set search_path = '';
alter function ops.validate_run_status_transition() set search_path = '';
alter function ops.record_run_status_change() set search_path = '';
alter function ops.refuse_run_event_update() set search_path = '';
alter function ops.clear_spec_hash() set search_path = '';
alter function ops.notify_runs_queued() set search_path = '';
alter function ops.fill_run_commit() set search_path = '';
