-- The run queue of `reconcile worker` (reconciler/db/run_queue.py): every call a worker makes.
-- The functions are those of migrations 0010 and 0021 (the batches); each write names the
-- claim's lease token.

-- name: reap_expired_runs
select ops.reap_expired_runs(%(limit)s)

-- name: finish_and_claim_runs
select ops.finish_and_claim_runs(%(finished)s, %(worker_id)s, %(lease_s)s, %(want)s,
                                 %(after_created)s, %(after_id)s)

-- name: heartbeat_run
select ops.heartbeat_run(%(run_id)s, %(token)s, %(lease_s)s)

-- name: append_run_logs
select ops.append_run_logs(%(run_id)s, %(token)s, %(lines)s)

-- name: record_run_artifact
select ops.record_run_artifact(%(run_id)s, %(token)s, %(key)s, %(url)s, %(content_type)s,
                               %(size)s, %(checksum)s, %(expires_at)s)

-- name: finish_run
select ops.finish_run(%(run_id)s, %(token)s, %(exit_code)s, %(error)s)

-- name: tool_image
select docker_image from ops.tools where tool_name = %(tool_name)s and version = %(version)s

-- name: listen_runs
listen ops_runs
