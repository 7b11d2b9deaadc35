-- The nine control-plane tables of the seed, with these deliberate differences:
-- * ops.projects.last_run_number: the per-project run counter (defect 7; see 0004).
-- * ops.runs.run_number is assigned per project by a trigger, not a global serial (defect 7),
--   and is unique per project. A run's workflow must belong to the run's project.
-- * ops.runs lease columns (attempt, max_attempts, lease_token, lease_expires_at,
--   cancel_requested_at) for defect 8; the functions that use them are in 0010.
-- * ops.upgrade_advisories.advisory_key: a natural key, so a declarative tool can tell an
--   edited advisory from a new one (defect 9).
-- * Indexes that only repeated a unique constraint's index are left out.
-- * run_events.created_at and run_logs.timestamp default to clock_timestamp(), not now(), so
--   the events and lines of one transaction keep their order.
-- gen_random_uuid() is core since PostgreSQL 13; pgcrypto is not required.

create table ops.projects (
  id uuid primary key default gen_random_uuid(),
  workspace_key text not null unique,
  slug text not null unique,
  name text not null,
  description text,
  odoo_version text not null,
  status text not null default 'active' check (status in ('active', 'archived')),
  config jsonb not null default '{}'::jsonb,
  last_run_number integer not null default 0 check (last_run_number >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table ops.projects is 'Workspace containers for OdooOps Sh projects';
comment on column ops.projects.workspace_key is 'Unique workspace identifier (e.g., ipai_workspace)';
comment on column ops.projects.slug is 'Human-readable project slug';
comment on column ops.projects.odoo_version is 'Target Odoo version (17.0, 18.0, 19.0)';
comment on column ops.projects.last_run_number is 'Highest run_number given to a run of this project';

create index idx_ops_projects_status on ops.projects(status) where status = 'active';

create table ops.workflows (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references ops.projects(id) on delete cascade,
  workflow_type text not null
    check (workflow_type in ('build', 'test', 'deploy', 'backup', 'upgrade')),
  name text not null,
  description text,
  enabled boolean not null default true,
  git_ref text,
  git_commit text,
  config jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (project_id, workflow_type, name),
  unique (id, project_id)
);

comment on table ops.workflows is 'Workflow definitions (build, test, deploy, backup, upgrade)';
comment on column ops.workflows.workflow_type is 'Type: build | test | deploy | backup | upgrade';
comment on column ops.workflows.git_ref is 'Branch or tag reference';
comment on column ops.workflows.git_commit is 'Commit SHA for reproducibility';

create index idx_ops_workflows_type on ops.workflows(workflow_type);
create index idx_ops_workflows_enabled on ops.workflows(enabled) where enabled = true;

create table ops.runs (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references ops.projects(id) on delete cascade,
  workflow_id uuid not null,
  run_number integer not null,
  idempotency_key text unique,
  status text not null default 'queued'
    check (status in ('queued', 'claimed', 'running', 'succeeded', 'failed', 'canceled')),
  claimed_by text,
  claimed_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  exit_code integer,
  error_message text,
  metadata jsonb not null default '{}'::jsonb,
  attempt integer not null default 0 check (attempt >= 0),
  max_attempts integer not null default 3 check (max_attempts >= 1),
  lease_token uuid,
  lease_expires_at timestamptz,
  cancel_requested_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (project_id, run_number),
  foreign key (workflow_id, project_id)
    references ops.workflows(id, project_id) on delete cascade
);

comment on table ops.runs is 'Main execution queue with worker claim pattern';
comment on column ops.runs.run_number is 'Run number per project: 1, 2, 3 ... without gaps';
comment on column ops.runs.idempotency_key is 'Client-generated key for deduplication';
comment on column ops.runs.claimed_by is 'Worker ID that claimed this run';
comment on column ops.runs.claimed_at is 'Timestamp when worker claimed run';
comment on column ops.runs.lease_token is 'Fencing token of the current claim (see 0010)';
comment on column ops.runs.lease_expires_at is 'When the claim lapses unless a heartbeat extends it';

create index idx_ops_runs_workflow_id on ops.runs(workflow_id);
create index idx_ops_runs_status on ops.runs(status);
create index idx_ops_runs_queued on ops.runs(created_at, id) where status = 'queued';
create index idx_ops_runs_claimed_by on ops.runs(claimed_by, claimed_at desc);

create table ops.run_events (
  id uuid primary key default gen_random_uuid(),
  run_id uuid not null references ops.runs(id) on delete cascade,
  event_type text not null check (event_type in ('state_change', 'error', 'warning', 'info')),
  message text not null,
  payload jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default clock_timestamp()
);

comment on table ops.run_events is 'Append-only event log for audit trail';
comment on column ops.run_events.event_type is 'Event type: state_change | error | warning | info';
comment on column ops.run_events.payload is 'Extensible JSON payload';

create index idx_ops_run_events_run_id on ops.run_events(run_id, created_at desc);
create index idx_ops_run_events_type on ops.run_events(event_type, created_at desc);

create table ops.run_artifacts (
  id uuid primary key default gen_random_uuid(),
  run_id uuid not null references ops.runs(id) on delete cascade,
  artifact_key text not null,
  artifact_url text not null,
  content_type text,
  size_bytes bigint check (size_bytes >= 0),
  checksum text,
  expires_at timestamptz,
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  unique (run_id, artifact_key)
);

comment on table ops.run_artifacts is 'Build output metadata (S3-style)';
comment on column ops.run_artifacts.artifact_key is 'S3-style artifact key';
comment on column ops.run_artifacts.checksum is 'SHA-256 checksum for integrity verification';
comment on column ops.run_artifacts.expires_at is 'Expiry date for automated cleanup';

create index idx_ops_run_artifacts_key on ops.run_artifacts(artifact_key);
-- Serves the cleanup query `where expires_at < now()` (defect 3: the seed put now() in the
-- predicate, which PostgreSQL refuses).
create index idx_ops_run_artifacts_expires on ops.run_artifacts(expires_at)
  where expires_at is not null;

create table ops.run_logs (
  id uuid primary key default gen_random_uuid(),
  run_id uuid not null references ops.runs(id) on delete cascade,
  log_level text not null check (log_level in ('debug', 'info', 'warn', 'error')),
  message text not null,
  metadata jsonb not null default '{}'::jsonb,
  timestamp timestamptz not null default clock_timestamp()
);

comment on table ops.run_logs is 'Structured log lines with full-text search';
comment on column ops.run_logs.log_level is 'Log level: debug | info | warn | error';

create index idx_ops_run_logs_run_id on ops.run_logs(run_id, timestamp desc);
create index idx_ops_run_logs_level on ops.run_logs(log_level, timestamp desc);
create index idx_ops_run_logs_message_fts on ops.run_logs
  using gin (to_tsvector('english', message));

create table ops.tools (
  id uuid primary key default gen_random_uuid(),
  tool_name text not null,
  version text not null,
  docker_image text not null,
  config jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (tool_name, version)
);

comment on table ops.tools is 'Docker image registry for tools';
comment on column ops.tools.docker_image is 'Full Docker image reference';

create table ops.upgrade_advisories (
  id uuid primary key default gen_random_uuid(),
  advisory_key text not null unique check (advisory_key ~ '^[a-z0-9][a-z0-9._-]*$'),
  from_version text not null check (from_version ~ '^\d+\.\d+$'),
  to_version text not null check (to_version ~ '^\d+\.\d+$'),
  severity text not null check (severity in ('low', 'medium', 'high', 'critical')),
  title text not null,
  description text not null,
  migration_guide text,
  affects_modules text[],
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table ops.upgrade_advisories is 'Breaking change warnings for version upgrades';
comment on column ops.upgrade_advisories.advisory_key is 'Natural key, stable across edits';
comment on column ops.upgrade_advisories.severity is 'Severity: low | medium | high | critical';
comment on column ops.upgrade_advisories.migration_guide is 'Markdown guide or URL to documentation';

create index idx_ops_upgrade_advisories_versions on ops.upgrade_advisories(from_version, to_version);
create index idx_ops_upgrade_advisories_severity on ops.upgrade_advisories(severity);

create table ops.project_memberships (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references ops.projects(id) on delete cascade,
  user_id uuid not null references auth.users(id) on delete cascade,
  role text not null check (role in ('owner', 'admin', 'developer', 'viewer')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (project_id, user_id)
);

comment on table ops.project_memberships is 'User access control for projects';
comment on column ops.project_memberships.role is 'Role: owner | admin | developer | viewer';

create index idx_ops_project_memberships_user_id on ops.project_memberships(user_id);
create index idx_ops_project_memberships_role on ops.project_memberships(role);

alter table ops.projects
  add constraint projects_workspace_key_format check (workspace_key ~ '^[a-z0-9_]+$'),
  add constraint projects_slug_format check (slug ~ '^[a-z0-9-]+$'),
  add constraint projects_odoo_version_format check (odoo_version ~ '^\d+\.\d+$');
