-- Who applied: `applied_by` is the database role (often one shared CI login); `actor` is the
-- person or bot behind it, as the CI names it (GITHUB_ACTOR, GITLAB_USER_LOGIN, ...) or the
-- local user's login name. Nullable: applies recorded before this migration have none.
alter table ops.reconcile_applies add column actor text;

comment on column ops.reconcile_applies.actor is
  'Who ran the apply: the CI actor when there is one, else the local user (applied_by is the database role)';
