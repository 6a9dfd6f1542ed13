"""The embedded database's schema, as numbered migrations (PRAGMA user_version counts them).
A migration is never edited once released; a change is a new one at the end."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        job_id      TEXT PRIMARY KEY,
        workflow_id TEXT,
        status      TEXT NOT NULL,
        created_at  REAL NOT NULL,
        expires_at  REAL,
        record      BLOB NOT NULL
    );
    CREATE INDEX jobs_by_workflow ON jobs (workflow_id, created_at DESC, job_id DESC);
    CREATE INDEX jobs_by_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
    """,
    """
    CREATE TABLE ledger (
        key        TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        result     BLOB,
        updated_at REAL NOT NULL
    );
    CREATE INDEX ledger_by_age ON ledger (updated_at);
    """,
    """
    ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE jobs ADD COLUMN execution_id TEXT;
    CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_by_execution ON jobs (execution_id, created_at DESC, job_id DESC)
        WHERE execution_id IS NOT NULL;
    CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE status IN ('queued', 'running');
    -- What a background job was asked (items, parameters) and what it answered.
    CREATE TABLE job_data (
        job_id  TEXT PRIMARY KEY,
        request BLOB,
        result  BLOB
    );
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        type        TEXT NOT NULL,
        workflow_id TEXT,
        job_id      TEXT,
        at          REAL NOT NULL,
        body        BLOB NOT NULL
    );
    CREATE TABLE subscriptions (
        id         TEXT PRIMARY KEY,
        record     BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    -- Outgoing webhooks (job callbacks, event deliveries) until delivered; kept as dead
    -- letters when they cannot be; jobs that kept killing their runs are dead letters too.
    CREATE TABLE deliveries (
        id         TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        created_at REAL NOT NULL,
        record     BLOB NOT NULL
    );
    CREATE INDEX deliveries_by_state ON deliveries (state, created_at);
    -- webhook-ids of incoming callbacks already applied: a repeat changes nothing.
    CREATE TABLE inbound (
        webhook_id  TEXT PRIMARY KEY,
        received_at REAL NOT NULL
    );
    CREATE INDEX inbound_by_age ON inbound (received_at);
    """,
    """
    -- What n8n reported of the workflow a job started: beside the record, which its worker
    -- rewrites, so a report that comes while the job runs is kept.
    ALTER TABLE job_data ADD COLUMN report BLOB;
    """,
    """
    -- GET /admin/jobs and the console's jobs page: every job, newest first, by each filter.
    -- The record is a BLOB: json_extract reads its text.
    ALTER TABLE jobs ADD COLUMN processing_type TEXT;
    ALTER TABLE jobs ADD COLUMN queue TEXT;
    UPDATE jobs SET
        processing_type = json_extract(CAST(record AS TEXT), '$.processing_type'),
        queue = json_extract(CAST(record AS TEXT), '$.queue');
    -- Each index holds the other filters' columns after its order: whichever one the planner
    -- walks, the rest are checked in the index, and only the jobs of the page are read from
    -- the table (a walk of 100,000 entries takes milliseconds; reading each job, tens).
    CREATE INDEX jobs_by_created
        ON jobs (created_at DESC, job_id DESC, status, processing_type, queue, workflow_id);
    CREATE INDEX jobs_by_status
        ON jobs (status, created_at DESC, job_id DESC, processing_type, queue, workflow_id);
    CREATE INDEX jobs_by_type
        ON jobs (processing_type, created_at DESC, job_id DESC, status, queue, workflow_id);
    CREATE INDEX jobs_by_queue
        ON jobs (queue, created_at DESC, job_id DESC, status, processing_type, workflow_id)
        WHERE queue IS NOT NULL;
    DROP INDEX jobs_by_workflow;
    CREATE INDEX jobs_by_workflow
        ON jobs (workflow_id, created_at DESC, job_id DESC, status, processing_type, queue);
    """,
    """
    -- A job's events, newest first (the console's timeline of a job).
    CREATE INDEX events_by_job ON events (job_id, id DESC) WHERE job_id IS NOT NULL;
    """,
    """
    -- Dead letters are listed newest first by (created_at, id), the id settling ties. A dead
    -- letter replayed is made again (its record's created_at: the replay's time), which an
    -- earlier version wrote to the record only: the column is set right from it.
    UPDATE deliveries SET created_at = json_extract(CAST(record AS TEXT), '$.created_at');
    DROP INDEX deliveries_by_state;
    CREATE INDEX deliveries_by_state ON deliveries (state, created_at, id);
    """,
)
