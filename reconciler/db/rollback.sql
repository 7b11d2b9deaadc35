-- `reconcile db drop --yes`: the seed's rollback. Removes every ops.* object ops-reconciler
-- installed, with their rows, and gives the legacy agent tables their old names back.
-- The auth schema is left alone: on Supabase it is not ours, and on plain PostgreSQL its users
-- may be referenced by other things.

drop table if exists ops.reconcile_applies cascade;
drop table if exists ops.reconcile_lock cascade;
-- (the roles anon, authenticated, service_role and ops_reader are cluster-wide: left alone)
drop table if exists ops.project_memberships cascade;
drop table if exists ops.upgrade_advisories cascade;
drop table if exists ops.tools cascade;
drop table if exists ops.run_logs cascade;
drop table if exists ops.run_artifacts cascade;
drop table if exists ops.run_events cascade;
drop table if exists ops.runs cascade;
drop table if exists ops.workflows cascade;
drop table if exists ops.projects cascade;

drop function if exists ops.claim_next_run(text);
drop function if exists ops.start_workflow_run(uuid, text);
drop function if exists ops.complete_workflow_run(uuid, int, text);
drop function if exists ops.append_run_log(uuid, text, text, jsonb);
drop function if exists ops.add_run_artifact(uuid, text, text, text, bigint, text, timestamptz, jsonb);
drop function if exists ops.list_queued_runs();

drop function if exists ops.current_user_id();
drop function if exists ops.current_user_role(uuid);
drop function if exists ops.is_project_member(uuid);
drop function if exists ops.is_run_visible(uuid);
-- 0016 (console), beside the membership functions they use; 0019 (console sessions)
drop function if exists ops.console_user_exists(uuid);
drop function if exists ops.console_fleet(text, text, text, integer);
drop function if exists ops.console_project_members(uuid);
drop function if exists ops.console_applies(integer, timestamptz);
drop function if exists ops.assign_run_number();
drop function if exists ops.validate_run_insert();
drop function if exists ops.validate_run_status_transition();
drop function if exists ops.record_run_status_change();
drop function if exists ops.refuse_run_event_update();
drop function if exists ops.clear_spec_hash();
drop function if exists ops.reap_expired_runs(integer);
drop function if exists ops.claim_run(text, integer, boolean);
drop function if exists ops.heartbeat_run(uuid, uuid, integer);
drop function if exists ops.start_run(uuid, uuid);
drop function if exists ops.append_run_logs(uuid, uuid, jsonb);
drop function if exists ops.record_run_artifact(uuid, uuid, text, text, text, bigint, text, timestamptz, jsonb);
drop function if exists ops.finish_and_claim_run(uuid, uuid, integer, text, text, integer);
drop function if exists ops.finish_and_claim_runs(jsonb, text, integer, integer);
drop function if exists ops.finish_run(uuid, uuid, integer, text);
drop function if exists ops.cancel_run(uuid, text);
drop function if exists ops.leased_run(uuid, uuid, text[]);
drop function if exists ops.notify_runs_queued();
-- 0018 (member probes)
drop function if exists ops.stamp_member_run();
drop function if exists ops.caller_is_reconciler();
-- 0014 (pipelines)
drop function if exists ops.require_run_operator(uuid, text);
drop function if exists ops.record_run_created();
drop function if exists ops.fill_run_commit();
drop function if exists ops.request_run(uuid, text, text);
drop function if exists ops.retry_run(uuid);
drop function if exists ops.request_cancel(uuid, text);
-- 0012 (checkout)
drop function if exists ops.fill_run_code();
drop function if exists ops.is_safe_repository_url(text);
drop function if exists ops.guard_managed_row();
drop function if exists ops.guard_member_insert();
drop function if exists ops.validate_run_key();
drop function if exists ops.keep_an_owner();
drop function if exists ops.remove_member(uuid);
drop function if exists ops.other_owners(uuid, uuid);
drop function if exists ops.acting_as_member();
-- with the index of 0011 on auth.users (compatible schema) that uses it
drop function if exists ops.email_key(text) cascade;
-- 0014 (pipelines)
drop function if exists ops.anchor_schedule();
drop function if exists ops.notify_runs_ready();
drop function if exists ops.snapshot_run_pipeline();
drop function if exists ops.unmet_need(text, uuid[]);
drop function if exists ops.needs_met(text, uuid[]);
drop function if exists ops.lane_busy(uuid, text);
drop function if exists ops.place_run_in_pipeline();
drop function if exists ops.cancel_dependents();
drop function if exists ops.unblock_dependents();
drop function if exists ops.reblock_dependents();
drop function if exists ops.next_claimable_run();
drop function if exists ops.due_schedules(timestamptz);
drop function if exists ops.enqueue_scheduled_run(uuid, timestamptz, timestamptz, integer);
-- 0020 (lane order)
drop function if exists ops.lane_ahead(uuid, text, timestamptz, uuid);
drop function if exists ops.supersede_requeued_run();

drop view if exists ops.agent_runs_v;
drop view if exists ops.agent_run_logs_v;
alter table if exists ops.agent_runs rename to runs;
alter table if exists ops.agent_run_logs rename to run_logs;

drop table if exists ops.schema_migrations;

-- Drop the schema only when nothing else lives in it (a restored legacy table keeps it).
do $$
begin
  if to_regnamespace('ops') is not null and not exists (
    select from pg_catalog.pg_class c where c.relnamespace = to_regnamespace('ops')
    union all
    select from pg_catalog.pg_proc p where p.pronamespace = to_regnamespace('ops')
  ) then
    drop schema ops;
  end if;
end $$;
