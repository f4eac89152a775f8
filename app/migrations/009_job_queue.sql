-- The queue a job was sent to (CONVERTD_QUEUE). Recovery re-queues a stranded job only on
-- its own queue: deployments that share one database each keep to their own jobs, whose
-- files may be in a store the other cannot read.
ALTER TABLE jobs ADD COLUMN queue text NOT NULL DEFAULT 'convertd';
