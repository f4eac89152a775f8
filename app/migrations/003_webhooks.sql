-- Webhooks: a job may name a URL that hears of its end, signed with the key's signing secret.

ALTER TABLE jobs
    ADD COLUMN webhook_url text,
    ADD COLUMN public_base text,      -- base URL of the API the job was created through
    ADD COLUMN webhook_status text;   -- 'delivered', or why delivery failed
