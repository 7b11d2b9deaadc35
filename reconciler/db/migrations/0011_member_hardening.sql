-- Hardening against members (issue 8): what a project member may do through the API roles
-- (`authenticated`, `anon`, `ops_reader`) can no longer forge, squat, erase or lock.
-- * Drift forgery: the reconciler's bookkeeping columns (managed_by, spec_hash of projects,
--   workflows, memberships, tools, advisories; workflows.git_commit; projects.last_run_number)
--   are written only by the reconciler: members get column privileges that leave them out,
--   and a trigger refuses member edits of managed rows except disabling/enabling a workflow
--   (which clears spec_hash, so it shows as drift). Triggers cannot be bypassed by members
--   (disabling one needs the table's owner, session_replication_role a superuser).
-- * Idempotency squat: a run's key is unique per workflow, not globally; a `push:` key (the
--   apply's) names the run's own workflow and only the reconciler may write one.
-- * Erased history: members cannot delete workflows (they disable them), and no one can delete
--   a workflow or project that has runs (the foreign keys restrict instead of cascading).
-- * Last owner: a member cannot delete or demote a project's last owner; owner changes of a
--   project are serialised on its row, so two concurrent demotions cannot leave none.
--   Members remove memberships with ops.remove_member(): no member role has DELETE on any ops
--   table, so none can LOCK one (DELETE privilege allows every lock mode).
-- * Reader lock: the apply lock is a row lock on ops.reconcile_lock, which only the
--   reconciler may update (an advisory lock can be taken by any role).
-- * E-mails: ops.email_key() is "the same e-mail" of reconciler/core/emails.py: each character
--   mapped by Unicode's simple lower-case mapping, as Go's strings.ToLower (GoTrue) does,
--   independent of the database's locale.

-- Who acts: the reconciler (the owner of the ops schema, a superuser, or service_role) or a
-- member (anything else: authenticated, anon, ops_reader, their logins).
create function ops.acting_as_member()
returns boolean
language sql
stable
set search_path = ''
as $$
  select not (
    pg_catalog.pg_has_role(current_user,
      (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'ops'), 'MEMBER')
    or pg_catalog.pg_has_role(current_user, 'service_role', 'MEMBER')
  );
$$;

-- 1. Drift forgery -------------------------------------------------------------------------

-- Members may change a managed row only in these ways; everything else of it is the files'.
create function ops.guard_managed_row()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_allowed text[] := coalesce(tg_argv, '{}');  -- what a member may change on a managed row
begin
  if not ops.acting_as_member() then
    return new;
  end if;
  if (to_jsonb(new) -> 'managed_by') is distinct from (to_jsonb(old) -> 'managed_by') then
    raise exception 'ops.%: managed_by is written only by reconcile', tg_table_name
      using errcode = 'insufficient_privilege';
  end if;
  if old.managed_by is not null
     and (to_jsonb(new) - v_allowed - 'spec_hash' - 'updated_at')
         is distinct from (to_jsonb(old) - v_allowed - 'spec_hash' - 'updated_at') then
    raise exception using
      errcode = 'insufficient_privilege',
      message = format('ops.%s: this row is managed by reconcile; change it in the files',
                       tg_table_name),
      hint = case when cardinality(v_allowed) > 0
                  then format('a member may change only %s of a managed row',
                              array_to_string(v_allowed, ', '))
                  else 'a member may not change a managed row' end;
  end if;
  -- Whatever a member changed is drift: the next plan compares the row in full.
  if (to_jsonb(new) - 'updated_at' - 'spec_hash') is distinct from
     (to_jsonb(old) - 'updated_at' - 'spec_hash') then
    new.spec_hash := null;
  end if;
  return new;
end;
$$;

create function ops.guard_member_insert()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if ops.acting_as_member() then
    new.managed_by := null;
    new.spec_hash := null;
  end if;
  return new;
end;
$$;

create trigger guard_managed_row before update on ops.projects
  for each row execute function ops.guard_managed_row();
create trigger guard_managed_row before update on ops.workflows
  for each row execute function ops.guard_managed_row('enabled');
create trigger guard_managed_row before update on ops.project_memberships
  for each row execute function ops.guard_managed_row();

create trigger guard_member_insert before insert on ops.workflows
  for each row execute function ops.guard_member_insert();
create trigger guard_member_insert before insert on ops.project_memberships
  for each row execute function ops.guard_member_insert();

-- Column privileges: content only, never the bookkeeping, the identity of a row or its project.
revoke insert, update, delete on ops.workflows from authenticated;
grant insert (project_id, workflow_type, name, description, enabled, git_ref, config, triggers)
  on ops.workflows to authenticated;
grant update (description, enabled, git_ref, config, triggers, updated_at)
  on ops.workflows to authenticated;
revoke insert, update on ops.project_memberships from authenticated;
grant insert (project_id, user_id, role) on ops.project_memberships to authenticated;
grant update (role, updated_at) on ops.project_memberships to authenticated;
-- projects: 0006 granted update (name, description, config, updated_at) to owners; kept.

-- 2. Idempotency squat ---------------------------------------------------------------------

alter table ops.runs drop constraint runs_idempotency_key_key;
-- Runs keyed before this migration with a `push:` key naming another workflow (a squat) keep
-- their history under a key that no apply will look for.
alter table ops.runs disable trigger enforce_run_status_transition;
update ops.runs r
set idempotency_key = 'squatted:' || r.idempotency_key
from ops.workflows w join ops.projects p on p.id = w.project_id
where w.id = r.workflow_id and r.idempotency_key like 'push:%'
  and right(r.idempotency_key, length(p.slug || w.workflow_type || w.name) + 3)
      <> ':' || p.slug || '/' || w.workflow_type || '/' || w.name;
alter table ops.runs enable trigger enforce_run_status_transition;
alter table ops.runs
  add constraint runs_workflow_idempotency_key unique (workflow_id, idempotency_key);
comment on column ops.runs.idempotency_key is
  'Deduplication key, unique per workflow; `push:<commit>:<project>/<type>/<name>` is the apply''s';

create function ops.validate_run_key()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_workflow text;
begin
  if new.idempotency_key is null or new.idempotency_key not like 'push:%' then
    return new;
  end if;
  if ops.acting_as_member() then
    raise exception 'Invalid run: keys starting with push: are the apply''s'
      using errcode = 'insufficient_privilege';
  end if;
  select p.slug || '/' || w.workflow_type || '/' || w.name into v_workflow
  from ops.workflows w join ops.projects p on p.id = w.project_id
  where w.id = new.workflow_id;
  if v_workflow is null
     or right(new.idempotency_key, length(v_workflow) + 1) <> ':' || v_workflow then
    raise exception 'Invalid run: key % does not name its workflow %',
      new.idempotency_key, v_workflow using errcode = 'check_violation';
  end if;
  return new;
end;
$$;

create trigger enforce_run_key before insert on ops.runs
  for each row execute function ops.validate_run_key();

-- The run counter skips a duplicate key of the same workflow (0004 compared keys globally).
create or replace function ops.assign_run_number()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_last integer;
begin
  select last_run_number into v_last
  from ops.projects
  where id = new.project_id
  for no key update;

  if not found then
    return new;  -- the foreign key reports the missing project
  end if;

  new.run_number := v_last + 1;
  if new.idempotency_key is not null
     and exists (select from ops.runs r
                 where r.workflow_id = new.workflow_id
                   and r.idempotency_key = new.idempotency_key) then
    return new;
  end if;

  update ops.projects set last_run_number = v_last + 1 where id = new.project_id;
  return new;
end;
$$;

-- 3. Erased history ------------------------------------------------------------------------

drop policy workflows_modify_developer on ops.workflows;
create policy workflows_insert_developer on ops.workflows
  for insert to authenticated
  with check (ops.current_user_role(project_id) in ('owner', 'admin', 'developer'));
create policy workflows_update_developer on ops.workflows
  for update to authenticated
  using (ops.current_user_role(project_id) in ('owner', 'admin', 'developer'))
  with check (ops.current_user_role(project_id) in ('owner', 'admin', 'developer'));

-- A workflow or project with runs is never deleted (disable or archive it): its runs, events,
-- logs and artifacts stay. Run events, logs and artifacts still go with their run, which only
-- the reconciler's retention (`reconcile runs cleanup`) or an operator deletes.
alter table ops.runs drop constraint runs_workflow_id_project_id_fkey;
alter table ops.runs add constraint runs_workflow_id_project_id_fkey
  foreign key (workflow_id, project_id) references ops.workflows(id, project_id)
  on delete restrict;
alter table ops.runs drop constraint runs_project_id_fkey;
alter table ops.runs add constraint runs_project_id_fkey
  foreign key (project_id) references ops.projects(id) on delete restrict;

-- 4. Last owner ----------------------------------------------------------------------------

-- Serialises the owner changes of one project: an update of its row (not just a lock, so a
-- REPEATABLE READ transaction that raced another fails to serialise), then the other owners.
create function ops.other_owners(p_project_id uuid, p_membership_id uuid)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  if ops.current_user_role(p_project_id) is distinct from 'owner' then
    raise exception 'only an owner changes the owners of a project'
      using errcode = 'insufficient_privilege';
  end if;
  update ops.projects set updated_at = updated_at where id = p_project_id;
  if not found then
    return null;  -- the project is being deleted
  end if;
  select count(*) into v_count from ops.project_memberships
  where project_id = p_project_id and role = 'owner' and id <> p_membership_id;
  return v_count;
end;
$$;
revoke execute on function ops.other_owners(uuid, uuid) from public;
grant execute on function ops.other_owners(uuid, uuid) to authenticated;

create function ops.keep_an_owner()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if old.role <> 'owner' or not ops.acting_as_member()
     or (tg_op = 'UPDATE' and new.role = 'owner' and new.project_id = old.project_id) then
    return coalesce(new, old);
  end if;
  if ops.other_owners(old.project_id, old.id) = 0 then
    raise exception using
      errcode = 'check_violation',
      message = 'a project keeps at least one owner: this is its last one',
      hint = 'make another member owner first';
  end if;
  return coalesce(new, old);
end;
$$;

create trigger keep_an_owner before update or delete on ops.project_memberships
  for each row execute function ops.keep_an_owner();

-- Removing a member is a function, not a DELETE privilege: a role with DELETE on a table may
-- LOCK it in any mode, and an ACCESS EXCLUSIVE lock on ops.project_memberships would stop every
-- policy check of every project (and every apply). The same rules as the policy of 0006: an
-- owner removes anyone, an admin anyone but an owner; and a project keeps an owner.
create function ops.remove_member(p_membership_id uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_member ops.project_memberships;
  v_role text;
begin
  select * into v_member from ops.project_memberships where id = p_membership_id for update;
  v_role := ops.current_user_role(v_member.project_id);
  if v_member.id is null or v_role is null then
    return false;  -- no such membership, or not one of the caller's projects
  end if;
  if not (v_role = 'owner' or (v_role = 'admin' and v_member.role <> 'owner')) then
    raise exception 'only an owner removes an owner, and an owner or admin another member'
      using errcode = 'insufficient_privilege';
  end if;
  if v_member.role = 'owner' and ops.other_owners(v_member.project_id, v_member.id) = 0 then
    raise exception using
      errcode = 'check_violation',
      message = 'a project keeps at least one owner: this is its last one',
      hint = 'make another member owner first';
  end if;
  delete from ops.project_memberships where id = p_membership_id;
  return true;
end;
$$;
revoke execute on function ops.remove_member(uuid) from public;
grant execute on function ops.remove_member(uuid) to authenticated, service_role;
revoke delete on ops.project_memberships from authenticated;

-- 5. Reader lock ---------------------------------------------------------------------------

-- The apply lock: `select ... for update` of this row needs UPDATE on it, which no member or
-- reader has (pg_advisory_lock is executable by every role, so it no longer guards applies).
create table ops.reconcile_lock (
  id boolean primary key default true check (id),
  note text
);
insert into ops.reconcile_lock (id, note) values (true, 'locked by each reconcile apply and plan');
comment on table ops.reconcile_lock is 'One row; each apply locks it (FOR UPDATE) for its transaction';
alter table ops.reconcile_lock enable row level security;
revoke all on ops.reconcile_lock from public, anon, authenticated;
grant select, update on ops.reconcile_lock to service_role;

-- 6. E-mails -------------------------------------------------------------------------------

-- The translate() table is written out (not lower(), which follows the database's locale and
-- does nothing to non-ASCII letters under the C locale). Pinned to reconciler/core/emails.py
-- by tests/test_db_hardening.py.
do $do$
declare
  v_upper text := ''
    || U&'\0041\0042\0043\0044\0045\0046\0047\0048\0049\004a'
    || U&'\004b\004c\004d\004e\004f\0050\0051\0052\0053\0054'
    || U&'\0055\0056\0057\0058\0059\005a\00c0\00c1\00c2\00c3'
    || U&'\00c4\00c5\00c6\00c7\00c8\00c9\00ca\00cb\00cc\00cd'
    || U&'\00ce\00cf\00d0\00d1\00d2\00d3\00d4\00d5\00d6\00d8'
    || U&'\00d9\00da\00db\00dc\00dd\00de\0100\0102\0104\0106'
    || U&'\0108\010a\010c\010e\0110\0112\0114\0116\0118\011a'
    || U&'\011c\011e\0120\0122\0124\0126\0128\012a\012c\012e'
    || U&'\0130\0132\0134\0136\0139\013b\013d\013f\0141\0143'
    || U&'\0145\0147\014a\014c\014e\0150\0152\0154\0156\0158'
    || U&'\015a\015c\015e\0160\0162\0164\0166\0168\016a\016c'
    || U&'\016e\0170\0172\0174\0176\0178\0179\017b\017d\0181'
    || U&'\0182\0184\0186\0187\0189\018a\018b\018e\018f\0190'
    || U&'\0191\0193\0194\0196\0197\0198\019c\019d\019f\01a0'
    || U&'\01a2\01a4\01a6\01a7\01a9\01ac\01ae\01af\01b1\01b2'
    || U&'\01b3\01b5\01b7\01b8\01bc\01c4\01c5\01c7\01c8\01ca'
    || U&'\01cb\01cd\01cf\01d1\01d3\01d5\01d7\01d9\01db\01de'
    || U&'\01e0\01e2\01e4\01e6\01e8\01ea\01ec\01ee\01f1\01f2'
    || U&'\01f4\01f6\01f7\01f8\01fa\01fc\01fe\0200\0202\0204'
    || U&'\0206\0208\020a\020c\020e\0210\0212\0214\0216\0218'
    || U&'\021a\021c\021e\0220\0222\0224\0226\0228\022a\022c'
    || U&'\022e\0230\0232\023a\023b\023d\023e\0241\0243\0244'
    || U&'\0245\0246\0248\024a\024c\024e\0370\0372\0376\037f'
    || U&'\0386\0388\0389\038a\038c\038e\038f\0391\0392\0393'
    || U&'\0394\0395\0396\0397\0398\0399\039a\039b\039c\039d'
    || U&'\039e\039f\03a0\03a1\03a3\03a4\03a5\03a6\03a7\03a8'
    || U&'\03a9\03aa\03ab\03cf\03d8\03da\03dc\03de\03e0\03e2'
    || U&'\03e4\03e6\03e8\03ea\03ec\03ee\03f4\03f7\03f9\03fa'
    || U&'\03fd\03fe\03ff\0400\0401\0402\0403\0404\0405\0406'
    || U&'\0407\0408\0409\040a\040b\040c\040d\040e\040f\0410'
    || U&'\0411\0412\0413\0414\0415\0416\0417\0418\0419\041a'
    || U&'\041b\041c\041d\041e\041f\0420\0421\0422\0423\0424'
    || U&'\0425\0426\0427\0428\0429\042a\042b\042c\042d\042e'
    || U&'\042f\0460\0462\0464\0466\0468\046a\046c\046e\0470'
    || U&'\0472\0474\0476\0478\047a\047c\047e\0480\048a\048c'
    || U&'\048e\0490\0492\0494\0496\0498\049a\049c\049e\04a0'
    || U&'\04a2\04a4\04a6\04a8\04aa\04ac\04ae\04b0\04b2\04b4'
    || U&'\04b6\04b8\04ba\04bc\04be\04c0\04c1\04c3\04c5\04c7'
    || U&'\04c9\04cb\04cd\04d0\04d2\04d4\04d6\04d8\04da\04dc'
    || U&'\04de\04e0\04e2\04e4\04e6\04e8\04ea\04ec\04ee\04f0'
    || U&'\04f2\04f4\04f6\04f8\04fa\04fc\04fe\0500\0502\0504'
    || U&'\0506\0508\050a\050c\050e\0510\0512\0514\0516\0518'
    || U&'\051a\051c\051e\0520\0522\0524\0526\0528\052a\052c'
    || U&'\052e\0531\0532\0533\0534\0535\0536\0537\0538\0539'
    || U&'\053a\053b\053c\053d\053e\053f\0540\0541\0542\0543'
    || U&'\0544\0545\0546\0547\0548\0549\054a\054b\054c\054d'
    || U&'\054e\054f\0550\0551\0552\0553\0554\0555\0556\10a0'
    || U&'\10a1\10a2\10a3\10a4\10a5\10a6\10a7\10a8\10a9\10aa'
    || U&'\10ab\10ac\10ad\10ae\10af\10b0\10b1\10b2\10b3\10b4'
    || U&'\10b5\10b6\10b7\10b8\10b9\10ba\10bb\10bc\10bd\10be'
    || U&'\10bf\10c0\10c1\10c2\10c3\10c4\10c5\10c7\10cd\13a0'
    || U&'\13a1\13a2\13a3\13a4\13a5\13a6\13a7\13a8\13a9\13aa'
    || U&'\13ab\13ac\13ad\13ae\13af\13b0\13b1\13b2\13b3\13b4'
    || U&'\13b5\13b6\13b7\13b8\13b9\13ba\13bb\13bc\13bd\13be'
    || U&'\13bf\13c0\13c1\13c2\13c3\13c4\13c5\13c6\13c7\13c8'
    || U&'\13c9\13ca\13cb\13cc\13cd\13ce\13cf\13d0\13d1\13d2'
    || U&'\13d3\13d4\13d5\13d6\13d7\13d8\13d9\13da\13db\13dc'
    || U&'\13dd\13de\13df\13e0\13e1\13e2\13e3\13e4\13e5\13e6'
    || U&'\13e7\13e8\13e9\13ea\13eb\13ec\13ed\13ee\13ef\13f0'
    || U&'\13f1\13f2\13f3\13f4\13f5\1c90\1c91\1c92\1c93\1c94'
    || U&'\1c95\1c96\1c97\1c98\1c99\1c9a\1c9b\1c9c\1c9d\1c9e'
    || U&'\1c9f\1ca0\1ca1\1ca2\1ca3\1ca4\1ca5\1ca6\1ca7\1ca8'
    || U&'\1ca9\1caa\1cab\1cac\1cad\1cae\1caf\1cb0\1cb1\1cb2'
    || U&'\1cb3\1cb4\1cb5\1cb6\1cb7\1cb8\1cb9\1cba\1cbd\1cbe'
    || U&'\1cbf\1e00\1e02\1e04\1e06\1e08\1e0a\1e0c\1e0e\1e10'
    || U&'\1e12\1e14\1e16\1e18\1e1a\1e1c\1e1e\1e20\1e22\1e24'
    || U&'\1e26\1e28\1e2a\1e2c\1e2e\1e30\1e32\1e34\1e36\1e38'
    || U&'\1e3a\1e3c\1e3e\1e40\1e42\1e44\1e46\1e48\1e4a\1e4c'
    || U&'\1e4e\1e50\1e52\1e54\1e56\1e58\1e5a\1e5c\1e5e\1e60'
    || U&'\1e62\1e64\1e66\1e68\1e6a\1e6c\1e6e\1e70\1e72\1e74'
    || U&'\1e76\1e78\1e7a\1e7c\1e7e\1e80\1e82\1e84\1e86\1e88'
    || U&'\1e8a\1e8c\1e8e\1e90\1e92\1e94\1e9e\1ea0\1ea2\1ea4'
    || U&'\1ea6\1ea8\1eaa\1eac\1eae\1eb0\1eb2\1eb4\1eb6\1eb8'
    || U&'\1eba\1ebc\1ebe\1ec0\1ec2\1ec4\1ec6\1ec8\1eca\1ecc'
    || U&'\1ece\1ed0\1ed2\1ed4\1ed6\1ed8\1eda\1edc\1ede\1ee0'
    || U&'\1ee2\1ee4\1ee6\1ee8\1eea\1eec\1eee\1ef0\1ef2\1ef4'
    || U&'\1ef6\1ef8\1efa\1efc\1efe\1f08\1f09\1f0a\1f0b\1f0c'
    || U&'\1f0d\1f0e\1f0f\1f18\1f19\1f1a\1f1b\1f1c\1f1d\1f28'
    || U&'\1f29\1f2a\1f2b\1f2c\1f2d\1f2e\1f2f\1f38\1f39\1f3a'
    || U&'\1f3b\1f3c\1f3d\1f3e\1f3f\1f48\1f49\1f4a\1f4b\1f4c'
    || U&'\1f4d\1f59\1f5b\1f5d\1f5f\1f68\1f69\1f6a\1f6b\1f6c'
    || U&'\1f6d\1f6e\1f6f\1f88\1f89\1f8a\1f8b\1f8c\1f8d\1f8e'
    || U&'\1f8f\1f98\1f99\1f9a\1f9b\1f9c\1f9d\1f9e\1f9f\1fa8'
    || U&'\1fa9\1faa\1fab\1fac\1fad\1fae\1faf\1fb8\1fb9\1fba'
    || U&'\1fbb\1fbc\1fc8\1fc9\1fca\1fcb\1fcc\1fd8\1fd9\1fda'
    || U&'\1fdb\1fe8\1fe9\1fea\1feb\1fec\1ff8\1ff9\1ffa\1ffb'
    || U&'\1ffc\2126\212a\212b\2132\2160\2161\2162\2163\2164'
    || U&'\2165\2166\2167\2168\2169\216a\216b\216c\216d\216e'
    || U&'\216f\2183\24b6\24b7\24b8\24b9\24ba\24bb\24bc\24bd'
    || U&'\24be\24bf\24c0\24c1\24c2\24c3\24c4\24c5\24c6\24c7'
    || U&'\24c8\24c9\24ca\24cb\24cc\24cd\24ce\24cf\2c00\2c01'
    || U&'\2c02\2c03\2c04\2c05\2c06\2c07\2c08\2c09\2c0a\2c0b'
    || U&'\2c0c\2c0d\2c0e\2c0f\2c10\2c11\2c12\2c13\2c14\2c15'
    || U&'\2c16\2c17\2c18\2c19\2c1a\2c1b\2c1c\2c1d\2c1e\2c1f'
    || U&'\2c20\2c21\2c22\2c23\2c24\2c25\2c26\2c27\2c28\2c29'
    || U&'\2c2a\2c2b\2c2c\2c2d\2c2e\2c2f\2c60\2c62\2c63\2c64'
    || U&'\2c67\2c69\2c6b\2c6d\2c6e\2c6f\2c70\2c72\2c75\2c7e'
    || U&'\2c7f\2c80\2c82\2c84\2c86\2c88\2c8a\2c8c\2c8e\2c90'
    || U&'\2c92\2c94\2c96\2c98\2c9a\2c9c\2c9e\2ca0\2ca2\2ca4'
    || U&'\2ca6\2ca8\2caa\2cac\2cae\2cb0\2cb2\2cb4\2cb6\2cb8'
    || U&'\2cba\2cbc\2cbe\2cc0\2cc2\2cc4\2cc6\2cc8\2cca\2ccc'
    || U&'\2cce\2cd0\2cd2\2cd4\2cd6\2cd8\2cda\2cdc\2cde\2ce0'
    || U&'\2ce2\2ceb\2ced\2cf2\a640\a642\a644\a646\a648\a64a'
    || U&'\a64c\a64e\a650\a652\a654\a656\a658\a65a\a65c\a65e'
    || U&'\a660\a662\a664\a666\a668\a66a\a66c\a680\a682\a684'
    || U&'\a686\a688\a68a\a68c\a68e\a690\a692\a694\a696\a698'
    || U&'\a69a\a722\a724\a726\a728\a72a\a72c\a72e\a732\a734'
    || U&'\a736\a738\a73a\a73c\a73e\a740\a742\a744\a746\a748'
    || U&'\a74a\a74c\a74e\a750\a752\a754\a756\a758\a75a\a75c'
    || U&'\a75e\a760\a762\a764\a766\a768\a76a\a76c\a76e\a779'
    || U&'\a77b\a77d\a77e\a780\a782\a784\a786\a78b\a78d\a790'
    || U&'\a792\a796\a798\a79a\a79c\a79e\a7a0\a7a2\a7a4\a7a6'
    || U&'\a7a8\a7aa\a7ab\a7ac\a7ad\a7ae\a7b0\a7b1\a7b2\a7b3'
    || U&'\a7b4\a7b6\a7b8\a7ba\a7bc\a7be\a7c0\a7c2\a7c4\a7c5'
    || U&'\a7c6\a7c7\a7c9\a7d0\a7d6\a7d8\a7f5\ff21\ff22\ff23'
    || U&'\ff24\ff25\ff26\ff27\ff28\ff29\ff2a\ff2b\ff2c\ff2d'
    || U&'\ff2e\ff2f\ff30\ff31\ff32\ff33\ff34\ff35\ff36\ff37'
    || U&'\ff38\ff39\ff3a\+010400\+010401\+010402\+010403\+010404\+010405\+010406'
    || U&'\+010407\+010408\+010409\+01040a\+01040b\+01040c\+01040d\+01040e\+01040f\+010410'
    || U&'\+010411\+010412\+010413\+010414\+010415\+010416\+010417\+010418\+010419\+01041a'
    || U&'\+01041b\+01041c\+01041d\+01041e\+01041f\+010420\+010421\+010422\+010423\+010424'
    || U&'\+010425\+010426\+010427\+0104b0\+0104b1\+0104b2\+0104b3\+0104b4\+0104b5\+0104b6'
    || U&'\+0104b7\+0104b8\+0104b9\+0104ba\+0104bb\+0104bc\+0104bd\+0104be\+0104bf\+0104c0'
    || U&'\+0104c1\+0104c2\+0104c3\+0104c4\+0104c5\+0104c6\+0104c7\+0104c8\+0104c9\+0104ca'
    || U&'\+0104cb\+0104cc\+0104cd\+0104ce\+0104cf\+0104d0\+0104d1\+0104d2\+0104d3\+010570'
    || U&'\+010571\+010572\+010573\+010574\+010575\+010576\+010577\+010578\+010579\+01057a'
    || U&'\+01057c\+01057d\+01057e\+01057f\+010580\+010581\+010582\+010583\+010584\+010585'
    || U&'\+010586\+010587\+010588\+010589\+01058a\+01058c\+01058d\+01058e\+01058f\+010590'
    || U&'\+010591\+010592\+010594\+010595\+010c80\+010c81\+010c82\+010c83\+010c84\+010c85'
    || U&'\+010c86\+010c87\+010c88\+010c89\+010c8a\+010c8b\+010c8c\+010c8d\+010c8e\+010c8f'
    || U&'\+010c90\+010c91\+010c92\+010c93\+010c94\+010c95\+010c96\+010c97\+010c98\+010c99'
    || U&'\+010c9a\+010c9b\+010c9c\+010c9d\+010c9e\+010c9f\+010ca0\+010ca1\+010ca2\+010ca3'
    || U&'\+010ca4\+010ca5\+010ca6\+010ca7\+010ca8\+010ca9\+010caa\+010cab\+010cac\+010cad'
    || U&'\+010cae\+010caf\+010cb0\+010cb1\+010cb2\+0118a0\+0118a1\+0118a2\+0118a3\+0118a4'
    || U&'\+0118a5\+0118a6\+0118a7\+0118a8\+0118a9\+0118aa\+0118ab\+0118ac\+0118ad\+0118ae'
    || U&'\+0118af\+0118b0\+0118b1\+0118b2\+0118b3\+0118b4\+0118b5\+0118b6\+0118b7\+0118b8'
    || U&'\+0118b9\+0118ba\+0118bb\+0118bc\+0118bd\+0118be\+0118bf\+016e40\+016e41\+016e42'
    || U&'\+016e43\+016e44\+016e45\+016e46\+016e47\+016e48\+016e49\+016e4a\+016e4b\+016e4c'
    || U&'\+016e4d\+016e4e\+016e4f\+016e50\+016e51\+016e52\+016e53\+016e54\+016e55\+016e56'
    || U&'\+016e57\+016e58\+016e59\+016e5a\+016e5b\+016e5c\+016e5d\+016e5e\+016e5f\+01e900'
    || U&'\+01e901\+01e902\+01e903\+01e904\+01e905\+01e906\+01e907\+01e908\+01e909\+01e90a'
    || U&'\+01e90b\+01e90c\+01e90d\+01e90e\+01e90f\+01e910\+01e911\+01e912\+01e913\+01e914'
    || U&'\+01e915\+01e916\+01e917\+01e918\+01e919\+01e91a\+01e91b\+01e91c\+01e91d\+01e91e'
    || U&'\+01e91f\+01e920\+01e921';
  v_lower text := ''
    || U&'\0061\0062\0063\0064\0065\0066\0067\0068\0069\006a'
    || U&'\006b\006c\006d\006e\006f\0070\0071\0072\0073\0074'
    || U&'\0075\0076\0077\0078\0079\007a\00e0\00e1\00e2\00e3'
    || U&'\00e4\00e5\00e6\00e7\00e8\00e9\00ea\00eb\00ec\00ed'
    || U&'\00ee\00ef\00f0\00f1\00f2\00f3\00f4\00f5\00f6\00f8'
    || U&'\00f9\00fa\00fb\00fc\00fd\00fe\0101\0103\0105\0107'
    || U&'\0109\010b\010d\010f\0111\0113\0115\0117\0119\011b'
    || U&'\011d\011f\0121\0123\0125\0127\0129\012b\012d\012f'
    || U&'\0069\0133\0135\0137\013a\013c\013e\0140\0142\0144'
    || U&'\0146\0148\014b\014d\014f\0151\0153\0155\0157\0159'
    || U&'\015b\015d\015f\0161\0163\0165\0167\0169\016b\016d'
    || U&'\016f\0171\0173\0175\0177\00ff\017a\017c\017e\0253'
    || U&'\0183\0185\0254\0188\0256\0257\018c\01dd\0259\025b'
    || U&'\0192\0260\0263\0269\0268\0199\026f\0272\0275\01a1'
    || U&'\01a3\01a5\0280\01a8\0283\01ad\0288\01b0\028a\028b'
    || U&'\01b4\01b6\0292\01b9\01bd\01c6\01c6\01c9\01c9\01cc'
    || U&'\01cc\01ce\01d0\01d2\01d4\01d6\01d8\01da\01dc\01df'
    || U&'\01e1\01e3\01e5\01e7\01e9\01eb\01ed\01ef\01f3\01f3'
    || U&'\01f5\0195\01bf\01f9\01fb\01fd\01ff\0201\0203\0205'
    || U&'\0207\0209\020b\020d\020f\0211\0213\0215\0217\0219'
    || U&'\021b\021d\021f\019e\0223\0225\0227\0229\022b\022d'
    || U&'\022f\0231\0233\2c65\023c\019a\2c66\0242\0180\0289'
    || U&'\028c\0247\0249\024b\024d\024f\0371\0373\0377\03f3'
    || U&'\03ac\03ad\03ae\03af\03cc\03cd\03ce\03b1\03b2\03b3'
    || U&'\03b4\03b5\03b6\03b7\03b8\03b9\03ba\03bb\03bc\03bd'
    || U&'\03be\03bf\03c0\03c1\03c3\03c4\03c5\03c6\03c7\03c8'
    || U&'\03c9\03ca\03cb\03d7\03d9\03db\03dd\03df\03e1\03e3'
    || U&'\03e5\03e7\03e9\03eb\03ed\03ef\03b8\03f8\03f2\03fb'
    || U&'\037b\037c\037d\0450\0451\0452\0453\0454\0455\0456'
    || U&'\0457\0458\0459\045a\045b\045c\045d\045e\045f\0430'
    || U&'\0431\0432\0433\0434\0435\0436\0437\0438\0439\043a'
    || U&'\043b\043c\043d\043e\043f\0440\0441\0442\0443\0444'
    || U&'\0445\0446\0447\0448\0449\044a\044b\044c\044d\044e'
    || U&'\044f\0461\0463\0465\0467\0469\046b\046d\046f\0471'
    || U&'\0473\0475\0477\0479\047b\047d\047f\0481\048b\048d'
    || U&'\048f\0491\0493\0495\0497\0499\049b\049d\049f\04a1'
    || U&'\04a3\04a5\04a7\04a9\04ab\04ad\04af\04b1\04b3\04b5'
    || U&'\04b7\04b9\04bb\04bd\04bf\04cf\04c2\04c4\04c6\04c8'
    || U&'\04ca\04cc\04ce\04d1\04d3\04d5\04d7\04d9\04db\04dd'
    || U&'\04df\04e1\04e3\04e5\04e7\04e9\04eb\04ed\04ef\04f1'
    || U&'\04f3\04f5\04f7\04f9\04fb\04fd\04ff\0501\0503\0505'
    || U&'\0507\0509\050b\050d\050f\0511\0513\0515\0517\0519'
    || U&'\051b\051d\051f\0521\0523\0525\0527\0529\052b\052d'
    || U&'\052f\0561\0562\0563\0564\0565\0566\0567\0568\0569'
    || U&'\056a\056b\056c\056d\056e\056f\0570\0571\0572\0573'
    || U&'\0574\0575\0576\0577\0578\0579\057a\057b\057c\057d'
    || U&'\057e\057f\0580\0581\0582\0583\0584\0585\0586\2d00'
    || U&'\2d01\2d02\2d03\2d04\2d05\2d06\2d07\2d08\2d09\2d0a'
    || U&'\2d0b\2d0c\2d0d\2d0e\2d0f\2d10\2d11\2d12\2d13\2d14'
    || U&'\2d15\2d16\2d17\2d18\2d19\2d1a\2d1b\2d1c\2d1d\2d1e'
    || U&'\2d1f\2d20\2d21\2d22\2d23\2d24\2d25\2d27\2d2d\ab70'
    || U&'\ab71\ab72\ab73\ab74\ab75\ab76\ab77\ab78\ab79\ab7a'
    || U&'\ab7b\ab7c\ab7d\ab7e\ab7f\ab80\ab81\ab82\ab83\ab84'
    || U&'\ab85\ab86\ab87\ab88\ab89\ab8a\ab8b\ab8c\ab8d\ab8e'
    || U&'\ab8f\ab90\ab91\ab92\ab93\ab94\ab95\ab96\ab97\ab98'
    || U&'\ab99\ab9a\ab9b\ab9c\ab9d\ab9e\ab9f\aba0\aba1\aba2'
    || U&'\aba3\aba4\aba5\aba6\aba7\aba8\aba9\abaa\abab\abac'
    || U&'\abad\abae\abaf\abb0\abb1\abb2\abb3\abb4\abb5\abb6'
    || U&'\abb7\abb8\abb9\abba\abbb\abbc\abbd\abbe\abbf\13f8'
    || U&'\13f9\13fa\13fb\13fc\13fd\10d0\10d1\10d2\10d3\10d4'
    || U&'\10d5\10d6\10d7\10d8\10d9\10da\10db\10dc\10dd\10de'
    || U&'\10df\10e0\10e1\10e2\10e3\10e4\10e5\10e6\10e7\10e8'
    || U&'\10e9\10ea\10eb\10ec\10ed\10ee\10ef\10f0\10f1\10f2'
    || U&'\10f3\10f4\10f5\10f6\10f7\10f8\10f9\10fa\10fd\10fe'
    || U&'\10ff\1e01\1e03\1e05\1e07\1e09\1e0b\1e0d\1e0f\1e11'
    || U&'\1e13\1e15\1e17\1e19\1e1b\1e1d\1e1f\1e21\1e23\1e25'
    || U&'\1e27\1e29\1e2b\1e2d\1e2f\1e31\1e33\1e35\1e37\1e39'
    || U&'\1e3b\1e3d\1e3f\1e41\1e43\1e45\1e47\1e49\1e4b\1e4d'
    || U&'\1e4f\1e51\1e53\1e55\1e57\1e59\1e5b\1e5d\1e5f\1e61'
    || U&'\1e63\1e65\1e67\1e69\1e6b\1e6d\1e6f\1e71\1e73\1e75'
    || U&'\1e77\1e79\1e7b\1e7d\1e7f\1e81\1e83\1e85\1e87\1e89'
    || U&'\1e8b\1e8d\1e8f\1e91\1e93\1e95\00df\1ea1\1ea3\1ea5'
    || U&'\1ea7\1ea9\1eab\1ead\1eaf\1eb1\1eb3\1eb5\1eb7\1eb9'
    || U&'\1ebb\1ebd\1ebf\1ec1\1ec3\1ec5\1ec7\1ec9\1ecb\1ecd'
    || U&'\1ecf\1ed1\1ed3\1ed5\1ed7\1ed9\1edb\1edd\1edf\1ee1'
    || U&'\1ee3\1ee5\1ee7\1ee9\1eeb\1eed\1eef\1ef1\1ef3\1ef5'
    || U&'\1ef7\1ef9\1efb\1efd\1eff\1f00\1f01\1f02\1f03\1f04'
    || U&'\1f05\1f06\1f07\1f10\1f11\1f12\1f13\1f14\1f15\1f20'
    || U&'\1f21\1f22\1f23\1f24\1f25\1f26\1f27\1f30\1f31\1f32'
    || U&'\1f33\1f34\1f35\1f36\1f37\1f40\1f41\1f42\1f43\1f44'
    || U&'\1f45\1f51\1f53\1f55\1f57\1f60\1f61\1f62\1f63\1f64'
    || U&'\1f65\1f66\1f67\1f80\1f81\1f82\1f83\1f84\1f85\1f86'
    || U&'\1f87\1f90\1f91\1f92\1f93\1f94\1f95\1f96\1f97\1fa0'
    || U&'\1fa1\1fa2\1fa3\1fa4\1fa5\1fa6\1fa7\1fb0\1fb1\1f70'
    || U&'\1f71\1fb3\1f72\1f73\1f74\1f75\1fc3\1fd0\1fd1\1f76'
    || U&'\1f77\1fe0\1fe1\1f7a\1f7b\1fe5\1f78\1f79\1f7c\1f7d'
    || U&'\1ff3\03c9\006b\00e5\214e\2170\2171\2172\2173\2174'
    || U&'\2175\2176\2177\2178\2179\217a\217b\217c\217d\217e'
    || U&'\217f\2184\24d0\24d1\24d2\24d3\24d4\24d5\24d6\24d7'
    || U&'\24d8\24d9\24da\24db\24dc\24dd\24de\24df\24e0\24e1'
    || U&'\24e2\24e3\24e4\24e5\24e6\24e7\24e8\24e9\2c30\2c31'
    || U&'\2c32\2c33\2c34\2c35\2c36\2c37\2c38\2c39\2c3a\2c3b'
    || U&'\2c3c\2c3d\2c3e\2c3f\2c40\2c41\2c42\2c43\2c44\2c45'
    || U&'\2c46\2c47\2c48\2c49\2c4a\2c4b\2c4c\2c4d\2c4e\2c4f'
    || U&'\2c50\2c51\2c52\2c53\2c54\2c55\2c56\2c57\2c58\2c59'
    || U&'\2c5a\2c5b\2c5c\2c5d\2c5e\2c5f\2c61\026b\1d7d\027d'
    || U&'\2c68\2c6a\2c6c\0251\0271\0250\0252\2c73\2c76\023f'
    || U&'\0240\2c81\2c83\2c85\2c87\2c89\2c8b\2c8d\2c8f\2c91'
    || U&'\2c93\2c95\2c97\2c99\2c9b\2c9d\2c9f\2ca1\2ca3\2ca5'
    || U&'\2ca7\2ca9\2cab\2cad\2caf\2cb1\2cb3\2cb5\2cb7\2cb9'
    || U&'\2cbb\2cbd\2cbf\2cc1\2cc3\2cc5\2cc7\2cc9\2ccb\2ccd'
    || U&'\2ccf\2cd1\2cd3\2cd5\2cd7\2cd9\2cdb\2cdd\2cdf\2ce1'
    || U&'\2ce3\2cec\2cee\2cf3\a641\a643\a645\a647\a649\a64b'
    || U&'\a64d\a64f\a651\a653\a655\a657\a659\a65b\a65d\a65f'
    || U&'\a661\a663\a665\a667\a669\a66b\a66d\a681\a683\a685'
    || U&'\a687\a689\a68b\a68d\a68f\a691\a693\a695\a697\a699'
    || U&'\a69b\a723\a725\a727\a729\a72b\a72d\a72f\a733\a735'
    || U&'\a737\a739\a73b\a73d\a73f\a741\a743\a745\a747\a749'
    || U&'\a74b\a74d\a74f\a751\a753\a755\a757\a759\a75b\a75d'
    || U&'\a75f\a761\a763\a765\a767\a769\a76b\a76d\a76f\a77a'
    || U&'\a77c\1d79\a77f\a781\a783\a785\a787\a78c\0265\a791'
    || U&'\a793\a797\a799\a79b\a79d\a79f\a7a1\a7a3\a7a5\a7a7'
    || U&'\a7a9\0266\025c\0261\026c\026a\029e\0287\029d\ab53'
    || U&'\a7b5\a7b7\a7b9\a7bb\a7bd\a7bf\a7c1\a7c3\a794\0282'
    || U&'\1d8e\a7c8\a7ca\a7d1\a7d7\a7d9\a7f6\ff41\ff42\ff43'
    || U&'\ff44\ff45\ff46\ff47\ff48\ff49\ff4a\ff4b\ff4c\ff4d'
    || U&'\ff4e\ff4f\ff50\ff51\ff52\ff53\ff54\ff55\ff56\ff57'
    || U&'\ff58\ff59\ff5a\+010428\+010429\+01042a\+01042b\+01042c\+01042d\+01042e'
    || U&'\+01042f\+010430\+010431\+010432\+010433\+010434\+010435\+010436\+010437\+010438'
    || U&'\+010439\+01043a\+01043b\+01043c\+01043d\+01043e\+01043f\+010440\+010441\+010442'
    || U&'\+010443\+010444\+010445\+010446\+010447\+010448\+010449\+01044a\+01044b\+01044c'
    || U&'\+01044d\+01044e\+01044f\+0104d8\+0104d9\+0104da\+0104db\+0104dc\+0104dd\+0104de'
    || U&'\+0104df\+0104e0\+0104e1\+0104e2\+0104e3\+0104e4\+0104e5\+0104e6\+0104e7\+0104e8'
    || U&'\+0104e9\+0104ea\+0104eb\+0104ec\+0104ed\+0104ee\+0104ef\+0104f0\+0104f1\+0104f2'
    || U&'\+0104f3\+0104f4\+0104f5\+0104f6\+0104f7\+0104f8\+0104f9\+0104fa\+0104fb\+010597'
    || U&'\+010598\+010599\+01059a\+01059b\+01059c\+01059d\+01059e\+01059f\+0105a0\+0105a1'
    || U&'\+0105a3\+0105a4\+0105a5\+0105a6\+0105a7\+0105a8\+0105a9\+0105aa\+0105ab\+0105ac'
    || U&'\+0105ad\+0105ae\+0105af\+0105b0\+0105b1\+0105b3\+0105b4\+0105b5\+0105b6\+0105b7'
    || U&'\+0105b8\+0105b9\+0105bb\+0105bc\+010cc0\+010cc1\+010cc2\+010cc3\+010cc4\+010cc5'
    || U&'\+010cc6\+010cc7\+010cc8\+010cc9\+010cca\+010ccb\+010ccc\+010ccd\+010cce\+010ccf'
    || U&'\+010cd0\+010cd1\+010cd2\+010cd3\+010cd4\+010cd5\+010cd6\+010cd7\+010cd8\+010cd9'
    || U&'\+010cda\+010cdb\+010cdc\+010cdd\+010cde\+010cdf\+010ce0\+010ce1\+010ce2\+010ce3'
    || U&'\+010ce4\+010ce5\+010ce6\+010ce7\+010ce8\+010ce9\+010cea\+010ceb\+010cec\+010ced'
    || U&'\+010cee\+010cef\+010cf0\+010cf1\+010cf2\+0118c0\+0118c1\+0118c2\+0118c3\+0118c4'
    || U&'\+0118c5\+0118c6\+0118c7\+0118c8\+0118c9\+0118ca\+0118cb\+0118cc\+0118cd\+0118ce'
    || U&'\+0118cf\+0118d0\+0118d1\+0118d2\+0118d3\+0118d4\+0118d5\+0118d6\+0118d7\+0118d8'
    || U&'\+0118d9\+0118da\+0118db\+0118dc\+0118dd\+0118de\+0118df\+016e60\+016e61\+016e62'
    || U&'\+016e63\+016e64\+016e65\+016e66\+016e67\+016e68\+016e69\+016e6a\+016e6b\+016e6c'
    || U&'\+016e6d\+016e6e\+016e6f\+016e70\+016e71\+016e72\+016e73\+016e74\+016e75\+016e76'
    || U&'\+016e77\+016e78\+016e79\+016e7a\+016e7b\+016e7c\+016e7d\+016e7e\+016e7f\+01e922'
    || U&'\+01e923\+01e924\+01e925\+01e926\+01e927\+01e928\+01e929\+01e92a\+01e92b\+01e92c'
    || U&'\+01e92d\+01e92e\+01e92f\+01e930\+01e931\+01e932\+01e933\+01e934\+01e935\+01e936'
    || U&'\+01e937\+01e938\+01e939\+01e93a\+01e93b\+01e93c\+01e93d\+01e93e\+01e93f\+01e940'
    || U&'\+01e941\+01e942\+01e943';
begin
  execute format($f$
    create function ops.email_key(p_email text)
    returns text
    language sql
    immutable
    parallel safe
    return pg_catalog.translate(p_email, %L, %L)
  $f$, v_upper, v_lower);
end
$do$;
comment on function ops.email_key(text) is
  'The key under which two e-mails are the same (Unicode simple lower case, as GoTrue stores them)';
grant execute on function ops.email_key(text) to public;
grant execute on function ops.acting_as_member() to public;

-- On the compatible auth schema (plain PostgreSQL), no two users share an e-mail key.
do $$
begin
  if obj_description('auth'::regnamespace, 'pg_namespace') like 'ops-reconciler:%' then
    create unique index users_email_key_folded on auth.users (ops.email_key(email));
  end if;
exception when unique_violation then
  raise notice 'auth.users holds e-mails that differ only in case; not indexing them';
end $$;
