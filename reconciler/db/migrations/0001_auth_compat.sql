-- Supabase provides the `auth` schema, `auth.users` and the roles `anon`, `authenticated` and
-- `service_role`. Plain PostgreSQL has none of them (seed review, defect 2). Create a minimal
-- compatible set where they are missing and leave Supabase's own untouched. `reconcile db
-- status` tells which one it found by the comment on the schema.

do $$
declare
  v_role text;
begin
  foreach v_role in array array['anon', 'authenticated', 'service_role'] loop
    if not exists (select from pg_catalog.pg_roles where rolname = v_role) then
      begin
        execute format('create role %I nologin noinherit', v_role);
      exception when duplicate_object then
        null;  -- created concurrently by a migration of another database in this cluster
      end;
    end if;
  end loop;
end $$;

-- The service role bypasses row-level security, as on Supabase. Only a superuser can grant
-- BYPASSRLS; on Supabase the role already has it and this is skipped.
do $$
begin
  if not (select rolbypassrls from pg_catalog.pg_roles where rolname = 'service_role')
     and (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
    alter role service_role bypassrls;
  end if;
end $$;

do $$
begin
  if to_regclass('auth.users') is null then
    create schema if not exists auth;
    create table auth.users (
      id uuid primary key default gen_random_uuid(),
      email text unique,
      raw_user_meta_data jsonb not null default '{}'::jsonb,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    comment on schema auth is
      'ops-reconciler: minimal Supabase-compatible auth schema for plain PostgreSQL';
    comment on table auth.users is
      'ops-reconciler: the users memberships refer to (Supabase keeps its own here)';
  end if;
end $$;
