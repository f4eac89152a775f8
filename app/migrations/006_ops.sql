-- Operations: retention, storage quota and backpressure per plan; expired jobs; request ids.
-- Independent of 005 (only tables and columns from 001-004 are touched).

ALTER TABLE plans
    ADD COLUMN retention      bigint CHECK (retention > 0),        -- seconds a job's files are kept; NULL: forever
    ADD COLUMN storage_quota  bigint CHECK (storage_quota >= 0),   -- bytes of uploads + outputs; NULL: unlimited
    ADD COLUMN max_pending    integer CHECK (max_pending >= 0);    -- waiting jobs per account; NULL: unlimited

ALTER TABLE jobs
    ADD COLUMN expired_at  timestamptz,   -- set when the retention sweeper deleted its files
    ADD COLUMN request_id  text;          -- the API request that created it, carried into its log lines

-- the backpressure check counts an account's waiting jobs on every convert
CREATE INDEX jobs_pending_account ON jobs (account_id) WHERE status = 'pending';
-- the sweeper looks for ended jobs past their plan's retention
CREATE INDEX jobs_ended_unexpired ON jobs (finished_at) WHERE expired_at IS NULL;
-- "is this upload still an input of some job?" (deleting a job, sweeping uploads)
CREATE INDEX jobs_input_uploads ON jobs USING gin (input_uploads);
CREATE INDEX uploads_created ON uploads (created_at);
-- the request log is trimmed by age
CREATE INDEX request_log_at ON request_log (at);
