-- What `reconcile` needs on top of the seed's schema:
-- * managed_by: who owns a row. The reconciler changes and prunes only rows it manages
--   (created or adopted by it); a row with NULL is someone else's and is shown as `adopt`.
-- * ops.workflows.triggers: the events that enqueue runs (`push`), from the `on:` of the files.
-- * spec_hash: the digest of the files' version of a managed row, written by each apply. A plan
--   compares it instead of every field; any other change to the row's content clears it (the
--   trigger below), so a row edited outside reconcile is compared in full and shows as drift.
-- * ops.reconcile_applies: a record of every apply (commit, ref, who, when, summary, plan).

alter table ops.projects add column managed_by text;
alter table ops.workflows add column managed_by text;
alter table ops.project_memberships add column managed_by text;
alter table ops.tools add column managed_by text;
alter table ops.upgrade_advisories add column managed_by text;

alter table ops.projects add column spec_hash text;
alter table ops.workflows add column spec_hash text;
alter table ops.project_memberships add column spec_hash text;
alter table ops.tools add column spec_hash text;
alter table ops.upgrade_advisories add column spec_hash text;

-- Clears spec_hash when a row's content changes by an update that does not set it. The
-- arguments name columns that are not content (bookkeeping the database or workers change).
create function ops.clear_spec_hash()
returns trigger
language plpgsql
as $$
begin
  if new.spec_hash is not distinct from old.spec_hash
     and (to_jsonb(new) - tg_argv) is distinct from (to_jsonb(old) - tg_argv) then
    new.spec_hash := null;
  end if;
  return new;
end;
$$;

create trigger clear_spec_hash before update on ops.projects
  for each row execute function ops.clear_spec_hash('spec_hash', 'updated_at', 'last_run_number');
create trigger clear_spec_hash before update on ops.workflows
  for each row execute function ops.clear_spec_hash('spec_hash', 'updated_at', 'git_commit');
create trigger clear_spec_hash before update on ops.project_memberships
  for each row execute function ops.clear_spec_hash('spec_hash', 'updated_at');
create trigger clear_spec_hash before update on ops.tools
  for each row execute function ops.clear_spec_hash('spec_hash', 'updated_at');
create trigger clear_spec_hash before update on ops.upgrade_advisories
  for each row execute function ops.clear_spec_hash('spec_hash', 'updated_at');

alter table ops.workflows
  add column triggers text[] not null default '{}'
    check (triggers <@ array['push']::text[]);

comment on column ops.projects.managed_by is 'Who manages the row: ops-reconciler, or NULL';
comment on column ops.workflows.triggers is 'Events that enqueue a run: push';

create table ops.reconcile_applies (
  id uuid primary key default gen_random_uuid(),
  git_commit text,
  git_ref text,
  summary jsonb not null,
  plan jsonb not null,
  applied_by text not null default current_user,
  applied_at timestamptz not null default clock_timestamp()
);

comment on table ops.reconcile_applies is 'Every `reconcile apply`: what it changed, from which commit';

create index idx_ops_reconcile_applies_applied_at on ops.reconcile_applies(applied_at desc);

alter table ops.reconcile_applies enable row level security;
revoke all on ops.reconcile_applies from public, anon, authenticated;
grant all on ops.reconcile_applies to service_role;

