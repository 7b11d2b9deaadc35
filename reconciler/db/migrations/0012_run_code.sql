-- The code a run checks out (issue 9).
-- * ops.projects.repository: the optional `repository:` of a Project (a git URL of the code,
--   when it is not the state repository itself).
-- * ops.runs.repository_url and ops.runs.commit_sha: where the worker fetches the run's code
--   and which commit it checks out, recorded when the run is enqueued. Null on runs enqueued
--   before 0012 (nothing to check out).
-- * Neither may hold a credential (members read both): a password, or an http(s) user, in
--   a URL is refused; workers bring their own credentials. Nor an option (a leading '-'),
--   control characters or a git remote helper (`ext::...`); the worker checks the transport
--   again before it runs git.
-- * A run inserted without them (a member starting a run through the API) gets the
--   project's repository and the hex commit named in its metadata, if any: a member can name
--   the commit, never the URL a worker fetches from.
-- * claim_run returns both, so the worker has them in the claim's round trip.

create function ops.is_safe_repository_url(p_url text)
returns boolean
language sql
immutable
set search_path = ''
as $$
  select p_url is null or (
    p_url <> ''
    and left(p_url, 1) <> '-'
    and p_url !~ '[[:cntrl:]]'
    and split_part(p_url, '/', 1) !~ '::'
    and p_url !~* '^https?://[^/@]*@'
    and p_url !~ '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@]*:[^/@]*@'
  );
$$;

comment on function ops.is_safe_repository_url(text) is
  'A repository URL with no credential, no leading dash, no control character, no remote helper';

alter table ops.projects
  add column repository text,
  add constraint projects_repository_safe check (ops.is_safe_repository_url(repository));

comment on column ops.projects.repository is
  'Git URL of the project''s code; null: the code is in the state repository';

alter table ops.runs
  add column repository_url text,
  add column commit_sha text,
  add constraint runs_repository_url_safe check (ops.is_safe_repository_url(repository_url)),
  add constraint runs_commit_sha_hex check (commit_sha ~ '^[0-9a-f]{40}([0-9a-f]{24})?$');

comment on column ops.runs.repository_url is 'Git URL the worker fetches the run''s code from';
comment on column ops.runs.commit_sha is 'The commit the worker checks out for the run';

create function ops.fill_run_code()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.repository_url is null then
    select p.repository into new.repository_url from ops.projects p where p.id = new.project_id;
  end if;
  if new.commit_sha is null and new.metadata ->> 'commit' ~ '^[0-9a-f]{40}([0-9a-f]{24})?$' then
    new.commit_sha := new.metadata ->> 'commit';
  end if;
  return new;
end;
$$;

create trigger fill_run_code
  before insert on ops.runs
  for each row execute function ops.fill_run_code();

create or replace function ops.claim_run(
  p_worker_id text, p_lease_seconds integer default 30, p_start boolean default false
)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_run ops.runs;
begin
  if coalesce(p_worker_id, '') = '' or coalesce(p_lease_seconds, 0) < 1 then
    raise exception 'claim_run: a worker id and a lease of at least 1 second are required'
      using errcode = 'invalid_parameter_value';
  end if;
  update ops.runs r
  set status = 'claimed', claimed_by = p_worker_id, claimed_at = now(),
      attempt = r.attempt + 1, lease_token = gen_random_uuid(),
      lease_expires_at = now() + make_interval(secs => p_lease_seconds)
  where r.id = (
    select q.id from ops.runs q
    where q.status = 'queued'
    order by q.created_at, q.id
    for update skip locked
    limit 1
  )
  returning r.* into v_run;

  if v_run.id is null then
    return null;
  end if;
  if p_start then  -- claimed, then running: two moves, two events, one round trip
    update ops.runs set status = 'running' where id = v_run.id returning * into v_run;
  end if;
  -- what the worker needs to run it, in the same round trip
  return (
    select jsonb_build_object(
      'run_id', v_run.id, 'project_id', v_run.project_id, 'workflow_id', v_run.workflow_id,
      'run_number', v_run.run_number, 'attempt', v_run.attempt,
      'lease_token', v_run.lease_token, 'lease_expires_at', v_run.lease_expires_at,
      'metadata', v_run.metadata, 'project', p.slug, 'type', w.workflow_type,
      'workflow', w.name, 'config', w.config,
      'repository_url', v_run.repository_url, 'commit_sha', v_run.commit_sha
    )
    from ops.workflows w join ops.projects p on p.id = w.project_id
    where w.id = v_run.workflow_id
  );
end;
$$;

