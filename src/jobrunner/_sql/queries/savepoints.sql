-- Statements on a caller's own connection (transactional enqueue, connection=): our writes
-- run inside a savepoint, so a statement that fails rolls back to it and leaves the caller's
-- transaction usable (see _db/_savepoint.py).

-- name: caller_savepoint
SAVEPOINT jobrunner_enqueue

-- name: caller_savepoint_release
RELEASE SAVEPOINT jobrunner_enqueue

-- name: caller_savepoint_rollback
ROLLBACK TO SAVEPOINT jobrunner_enqueue
