-- Fair dispatch: a per-plan cap on the jobs of one account processing at once.
-- NULL is unlimited, the setting of every existing plan.

ALTER TABLE plans ADD COLUMN max_running integer CHECK (max_running > 0);
