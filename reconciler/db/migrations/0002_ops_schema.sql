-- The seed never created the `ops` schema (seed review, defect 1) and renamed the legacy agent
-- tables unconditionally. Create the schema, then rename a legacy `ops.runs` / `ops.run_logs`
-- (an earlier agent-tracking system) out of the way, keeping every row. On a fresh database
-- this is a no-op.

create schema if not exists ops;

do $$
declare
  v_pair text[];
  v_index record;
  v_seq record;
begin
  if to_regclass('ops.workflows') is not null then
    raise exception 'ops.workflows already exists but ops-reconciler did not install it'
      using hint = 'this database holds an ops schema installed by other means; '
                   'move it away or use another database';
  end if;

  foreach v_pair slice 1 in array array[['runs', 'agent_runs'], ['run_logs', 'agent_run_logs']] loop
    continue when to_regclass(format('ops.%I', v_pair[1])) is null;
    if to_regclass(format('ops.%I', v_pair[2])) is not null then
      raise exception 'both ops.% and ops.% exist; cannot rename the legacy table',
        v_pair[1], v_pair[2];
    end if;

    -- Index names live in the schema's namespace: `runs_pkey` of the legacy table would
    -- collide with the new `ops.runs`. Rename every index (through its constraint, if any).
    for v_index in
      select i.relname as index_name, c.conname
      from pg_catalog.pg_index x
      join pg_catalog.pg_class i on i.oid = x.indexrelid
      left join pg_catalog.pg_constraint c on c.conindid = x.indexrelid
                                          and c.conrelid = x.indrelid
      where x.indrelid = format('ops.%I', v_pair[1])::regclass
    loop
      if v_index.conname is not null then
        execute format('alter table ops.%I rename constraint %I to %I',
                       v_pair[1], v_index.conname, left('agent_' || v_index.conname, 63));
      else
        execute format('alter index ops.%I rename to %I',
                       v_index.index_name, left('agent_' || v_index.index_name, 63));
      end if;
    end loop;

    for v_seq in
      select s.relname
      from pg_catalog.pg_depend d
      join pg_catalog.pg_class s on s.oid = d.objid and s.relkind = 'S'
      where d.refobjid = format('ops.%I', v_pair[1])::regclass and d.deptype in ('a', 'i')
    loop
      execute format('alter sequence ops.%I rename to %I',
                     v_seq.relname, left('agent_' || v_seq.relname, 63));
    end loop;

    execute format('alter table ops.%I rename to %I', v_pair[1], v_pair[2]);
    execute format('comment on table ops.%I is %L', v_pair[2],
                   format('Renamed from ops.%s by ops-reconciler for the control plane', v_pair[1]));
    execute format('create view ops.%I as select * from ops.%I', v_pair[2] || '_v', v_pair[2]);
  end loop;
end $$;
