-- The web console (`reconcile console`) reads everything as the `authenticated` role with the
-- member's JWT claims set, so row-level security decides what each person sees. Two things a
-- member needs are not readable that way, and are given here through `security definer`
-- functions that apply the same membership rule themselves:
-- * ops.console_project_members: the e-mail addresses and roles of a project's members, to
--   its members only (auth.users is not readable by `authenticated`, and must not be: it holds
--   every user of every project).
-- * ops.console_applies: the history of applies, each with only the changes a member may see:
--   those of the projects they belong to, and tools and advisories (readable by every signed-in
--   user). An apply that changed nothing visible is left out. ops.reconcile_applies itself
--   stays closed to `authenticated` (its plans name every project).
-- * ops.console_fleet: one page of the member's projects, each with its drift and the last run
--   of each workflow, in one query. It joins the member's memberships instead of leaving the
--   rule to the tables' policies, which PostgreSQL evaluates row by row before a search
--   filter (a function call per project: 10,000 calls to search a fleet of 10,000 projects).
--   The rule is the same as ops.is_project_member's: a row exists for the caller only where
--   a membership of theirs does.
-- And an index for "the last run of each workflow" on the fleet and project pages.

create index idx_ops_runs_workflow_latest on ops.runs(workflow_id, created_at desc, id desc);

create function ops.console_project_members(p_project_id uuid)
returns table (email text, role text, managed boolean)
language sql
stable
security definer
set search_path = ''
as $$
  select u.email, m.role, m.managed_by is not null
  from ops.project_memberships m
  join auth.users u on u.id = m.user_id
  where m.project_id = p_project_id
    and ops.is_project_member(p_project_id)
  order by array_position(array['owner', 'admin', 'developer', 'viewer'], m.role), u.email;
$$;

create function ops.console_applies(p_limit integer, p_before timestamptz default null)
returns table (
  id uuid, applied_at timestamptz, git_commit text, git_ref text, applied_by text,
  changes jsonb, runs jsonb
)
language sql
stable
security definer
set search_path = ''
as $$
  with mine as (
    select p.slug
    from ops.project_memberships m
    join ops.projects p on p.id = m.project_id
    where m.user_id = ops.current_user_id()
  ),
  visible as (
    select a.id, a.applied_at, a.git_commit, a.git_ref, a.applied_by,
      coalesce((
        select jsonb_agg(c order by n)
        from jsonb_array_elements(a.plan -> 'changes') with ordinality as e(c, n)
        where c ->> 'kind' in ('tool', 'upgrade_advisory')
           or split_part(c ->> 'key', '/', 1) in (select slug from mine)
      ), '[]'::jsonb) as changes,
      coalesce((
        select jsonb_agg(r order by n)
        from jsonb_array_elements(a.plan -> 'runs') with ordinality as e(r, n)
        where split_part(r ->> 'workflow', '/', 1) in (select slug from mine)
      ), '[]'::jsonb) as runs
    from ops.reconcile_applies a
    where ops.current_user_id() is not null
      and (p_before is null or a.applied_at < p_before)
  )
  select * from visible
  where jsonb_array_length(changes) > 0 or jsonb_array_length(runs) > 0
  order by applied_at desc
  limit least(greatest(p_limit, 1), 200);
$$;

-- Keyset pages in slug order: after a slug (next), or before one (previous). p_search is an
-- ILIKE pattern the caller has escaped.
create function ops.console_fleet(
  p_search text, p_after text, p_before text, p_limit integer
)
returns table (
  slug text, name text, odoo_version text, status text, drifted boolean, last_runs jsonb
)
language sql
stable
security definer
set search_path = ''
as $$
  with page as (
    select p.id, p.slug, p.name, p.odoo_version, p.status, p.managed_by, p.spec_hash
    from ops.projects p
    join ops.project_memberships m
      on m.project_id = p.id and m.user_id = (select ops.current_user_id())
    where (p_search is null or p.slug ilike p_search or p.name ilike p_search)
      and (p_after is null or p.slug > p_after)
      and (p_before is null or p.slug < p_before)
    order by case when p_before is null then p.slug end,
             case when p_before is not null then p.slug end desc
    limit least(greatest(p_limit, 1), 201)
  )
  select p.slug, p.name, p.odoo_version, p.status,
    (p.managed_by is not null and p.spec_hash is null)
      or exists (select from ops.workflows w
                 where w.project_id = p.id and w.managed_by is not null and w.spec_hash is null)
      or exists (select from ops.project_memberships m
                 where m.project_id = p.id and m.managed_by is not null and m.spec_hash is null),
    coalesce((
      select jsonb_agg(jsonb_build_object(
               'workflow', w.workflow_type || '/' || w.name, 'id', r.id,
               'number', r.run_number, 'status', r.status)
             order by w.workflow_type, w.name)
      from ops.workflows w
      left join lateral (
        select r.id, r.run_number, r.status from ops.runs r
        where r.workflow_id = w.id order by r.created_at desc, r.id desc limit 1
      ) r on true
      where w.project_id = p.id
    ), '[]'::jsonb)
  from page p
  order by p.slug;
$$;

revoke execute on function
  ops.console_project_members(uuid), ops.console_applies(integer, timestamptz),
  ops.console_fleet(text, text, text, integer)
from public;
grant execute on function
  ops.console_project_members(uuid), ops.console_applies(integer, timestamptz),
  ops.console_fleet(text, text, text, integer)
to authenticated, service_role;
