-- ops_reader: what a read-only login needs for `reconcile plan --read-only` and the drift
-- check (the pull-request and scheduled GitHub Actions): read every ops.* row, through RLS,
-- and the users. Grant it to a login: `create role ci_reader login password '...';
-- grant ops_reader to ci_reader;`

do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'ops_reader') then
    begin
      create role ops_reader nologin;
    exception when duplicate_object then
      null;
    end;
  end if;
end $$;

grant usage on schema ops to ops_reader;
grant select on
  ops.projects, ops.workflows, ops.runs, ops.run_events, ops.run_artifacts, ops.run_logs,
  ops.tools, ops.upgrade_advisories, ops.project_memberships, ops.reconcile_applies,
  ops.schema_migrations
to ops_reader;

create policy projects_select_reader on ops.projects for select to ops_reader using (true);
create policy workflows_select_reader on ops.workflows for select to ops_reader using (true);
create policy runs_select_reader on ops.runs for select to ops_reader using (true);
create policy run_events_select_reader on ops.run_events for select to ops_reader using (true);
create policy run_artifacts_select_reader on ops.run_artifacts
  for select to ops_reader using (true);
create policy run_logs_select_reader on ops.run_logs for select to ops_reader using (true);
create policy tools_select_reader on ops.tools for select to ops_reader using (true);
create policy upgrade_advisories_select_reader on ops.upgrade_advisories
  for select to ops_reader using (true);
create policy project_memberships_select_reader on ops.project_memberships
  for select to ops_reader using (true);
create policy reconcile_applies_select_reader on ops.reconcile_applies
  for select to ops_reader using (true);

-- auth.users belongs to Supabase there; grant what the migrating role may grant, no more.
do $$
begin
  grant usage on schema auth to ops_reader;
  grant select (id, email) on auth.users to ops_reader;
exception when insufficient_privilege then
  raise notice 'ops_reader cannot read auth.users here; grant it as the owner of auth.users';
end $$;
