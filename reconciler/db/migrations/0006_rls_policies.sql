-- Row-level security: project isolation and the role hierarchy owner > admin > developer > viewer.
-- Differences from the seed:
-- * Membership lookups are `security definer` functions with a pinned search_path, so a policy
--   never reads ops.project_memberships through its own policy (defect 4: infinite recursion).
-- * Only the service role (and the owner of the tables, i.e. the reconciler) creates projects
--   (defect 5: the seed let any authenticated user insert any project).
-- * A member can only insert a run that is queued (defect 6; the trigger of 0004 enforces it
--   for everyone).
-- * Every policy is `to authenticated`; `anon` has no privilege on the schema at all.
-- * Admins manage memberships but not the owners' ones; only an owner makes or edits an owner.

alter table ops.projects enable row level security;
alter table ops.workflows enable row level security;
alter table ops.runs enable row level security;
alter table ops.run_events enable row level security;
alter table ops.run_artifacts enable row level security;
alter table ops.run_logs enable row level security;
alter table ops.tools enable row level security;
alter table ops.upgrade_advisories enable row level security;
alter table ops.project_memberships enable row level security;

-- The user of the request: the `sub` claim, as PostgREST sets it (`request.jwt.claim.sub` on
-- older versions, `request.jwt.claims` on newer ones).
create function ops.current_user_id()
returns uuid
language sql
stable
set search_path = ''
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
  )::uuid;
$$;

create function ops.current_user_role(p_project_id uuid)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select m.role
  from ops.project_memberships m
  where m.project_id = p_project_id
    and m.user_id = ops.current_user_id();
$$;

create function ops.is_project_member(p_project_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select from ops.project_memberships m
    where m.project_id = p_project_id
      and m.user_id = ops.current_user_id()
  );
$$;

create function ops.is_run_visible(p_run_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select
    from ops.runs r
    join ops.project_memberships m on m.project_id = r.project_id
    where r.id = p_run_id
      and m.user_id = ops.current_user_id()
  );
$$;

revoke execute on function
  ops.current_user_id(), ops.current_user_role(uuid), ops.is_project_member(uuid),
  ops.is_run_visible(uuid)
from public;
grant execute on function
  ops.current_user_id(), ops.current_user_role(uuid), ops.is_project_member(uuid),
  ops.is_run_visible(uuid)
to authenticated, service_role;

-- 1. projects
create policy projects_select_member on ops.projects
  for select to authenticated
  using (ops.is_project_member(id));

create policy projects_update_owner on ops.projects
  for update to authenticated
  using (ops.current_user_role(id) = 'owner')
  with check (ops.current_user_role(id) = 'owner');

-- 2. workflows
create policy workflows_select_member on ops.workflows
  for select to authenticated
  using (ops.is_project_member(project_id));

create policy workflows_modify_developer on ops.workflows
  for all to authenticated
  using (ops.current_user_role(project_id) in ('owner', 'admin', 'developer'))
  with check (ops.current_user_role(project_id) in ('owner', 'admin', 'developer'));

-- 3. runs: state changes only through the RPC functions (service role)
create policy runs_select_member on ops.runs
  for select to authenticated
  using (ops.is_project_member(project_id));

create policy runs_insert_developer on ops.runs
  for insert to authenticated
  with check (
    status = 'queued'
    and ops.current_user_role(project_id) in ('owner', 'admin', 'developer')
  );

-- 4-6. events, artifacts, logs: read-only for members
create policy run_events_select_member on ops.run_events
  for select to authenticated
  using (ops.is_run_visible(run_id));

create policy run_artifacts_select_member on ops.run_artifacts
  for select to authenticated
  using (ops.is_run_visible(run_id));

create policy run_logs_select_member on ops.run_logs
  for select to authenticated
  using (ops.is_run_visible(run_id));

-- 7-8. tools and advisories: readable by every signed-in user
create policy tools_select_all on ops.tools
  for select to authenticated
  using (true);

create policy upgrade_advisories_select_all on ops.upgrade_advisories
  for select to authenticated
  using (true);

-- 9. memberships
create policy project_memberships_select_member on ops.project_memberships
  for select to authenticated
  using (ops.is_project_member(project_id));

create policy project_memberships_modify_admin on ops.project_memberships
  for all to authenticated
  using (
    ops.current_user_role(project_id) = 'owner'
    or (ops.current_user_role(project_id) = 'admin' and role <> 'owner')
  )
  with check (
    ops.current_user_role(project_id) = 'owner'
    or (ops.current_user_role(project_id) = 'admin' and role <> 'owner')
  );

-- Table privileges: RLS decides which rows; these decide which operations exist at all.
grant usage on schema ops to authenticated, service_role;
revoke all on
  ops.projects, ops.workflows, ops.runs, ops.run_events, ops.run_artifacts, ops.run_logs,
  ops.tools, ops.upgrade_advisories, ops.project_memberships
from public, anon, authenticated;

grant select on
  ops.projects, ops.workflows, ops.runs, ops.run_events, ops.run_artifacts, ops.run_logs,
  ops.tools, ops.upgrade_advisories, ops.project_memberships
to authenticated;
grant update (name, description, config, updated_at) on ops.projects to authenticated;
grant insert, update, delete on ops.workflows to authenticated;
grant insert (project_id, workflow_id, idempotency_key, metadata) on ops.runs to authenticated;
grant insert, update, delete on ops.project_memberships to authenticated;

grant all on
  ops.projects, ops.workflows, ops.runs, ops.run_events, ops.run_artifacts, ops.run_logs,
  ops.tools, ops.upgrade_advisories, ops.project_memberships
to service_role;
