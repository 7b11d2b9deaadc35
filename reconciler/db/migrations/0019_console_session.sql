-- The console signs a person in with a JWT, which stays valid until it expires even when its
-- user no longer exists (a token for an id that was never a user, or a user deleted since).
-- ops.console_user_exists tells the console, on every request, whether the token's subject is
-- a user in auth.users, so such a token opens nothing: not a page, not an empty fleet.
-- It is `security definer` because auth.users is not readable by `authenticated` (and must not
-- be); it answers only yes or no for one id the caller already holds. The console calls it in
-- the statement that switches to `authenticated`, so the privilege is checked as the console's
-- own login: a login that may `set role authenticated` is a member of it and inherits the
-- grant (a superuser needs none). `anon` (Supabase's signed-out API role) may not call it.

create function ops.console_user_exists(p_user_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (select from auth.users u where u.id = p_user_id);
$$;

revoke execute on function ops.console_user_exists(uuid) from public;
grant execute on function ops.console_user_exists(uuid) to authenticated, service_role;
