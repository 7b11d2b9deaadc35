-- What `reconcile` needs on top of the seed's schema:
-- * managed_by: who owns a row. The reconciler changes and prunes only rows it manages
--   (created or adopted by it); a row with NULL is someone else's and is shown as `adopt`.
-- * ops.workflows.triggers: the events that enqueue runs (`push`), from the `on:` of the files.
-- * ops.reconcile_applies: a record of every apply (commit, ref, who, when, summary, plan).

alter table ops.projects add column managed_by text;
alter table ops.workflows add column managed_by text;
alter table ops.project_memberships add column managed_by text;
alter table ops.tools add column managed_by text;
alter table ops.upgrade_advisories add column managed_by text;

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

