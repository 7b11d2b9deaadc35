-- The console signs a person in with a JWT, which stays valid until it expires even when its
-- user no longer exists (a token for an id that was never a user, or a user deleted since).
-- ops.console_user_exists tells the console, on every request, whether the token's subject is
-- a user in auth.users, so such a token opens nothing: not a page, not an empty fleet.
-- It is `security definer` because auth.users is not readable by `authenticated` (and must not
-- be); it answers only yes or no for one id the caller already holds, and is executable by
-- every role because the console calls it in the statement that switches to `authenticated`
-- (privileges are checked as the console's own login, whatever its name).

create function ops.console_user_exists(p_user_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (select from auth.users u where u.id = p_user_id);
$$;
