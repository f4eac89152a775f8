-- What of a job's input is not in its output, and why (an archive's links, left out):
-- converters' Result.notes, shown to the job's owner with the finished job.
ALTER TABLE jobs ADD COLUMN output_notes jsonb NOT NULL DEFAULT '[]';
