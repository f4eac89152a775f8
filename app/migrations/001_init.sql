-- Plans, accounts, API keys, uploads and jobs: the truth about every conversion.

CREATE TABLE plans (
    name              text PRIMARY KEY,
    api_access        boolean NOT NULL DEFAULT true,
    calls_per_day     integer CHECK (calls_per_day >= 0),      -- NULL: unlimited
    calls_per_minute  integer CHECK (calls_per_minute >= 0),   -- NULL: unlimited
    max_file_size     bigint CHECK (max_file_size > 0),        -- NULL: the server's limit
    conversions       bigint CHECK (conversions >= 0),         -- NULL: unlimited
    created_at        timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (name, api_access, calls_per_day, calls_per_minute) VALUES
    ('free', false, 0, 0),
    ('basic', true, 2000, 60),
    ('pro', true, NULL, NULL);

CREATE TABLE accounts (
    id                 bigserial PRIMARY KEY,
    name               text NOT NULL,
    plan               text NOT NULL REFERENCES plans (name) ON UPDATE CASCADE,
    active             boolean NOT NULL DEFAULT true,
    conversions_used   bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id                 bigserial PRIMARY KEY,
    kid                uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    account_id         bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name               text NOT NULL,
    prefix             text NOT NULL,            -- first characters, to recognise a key in lists
    key_hash           bytea NOT NULL UNIQUE,    -- sha256 of the key; the key itself is never stored
    environment        text NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test')),
    restriction_type   text NOT NULL DEFAULT 'all' CHECK (restriction_type IN ('all', 'ip', 'domain')),
    allowed_ips        text[] NOT NULL DEFAULT '{}',
    allowed_domains    text[] NOT NULL DEFAULT '{}',
    allowed_endpoints  text[] NOT NULL DEFAULT '{}',
    usage_count        bigint NOT NULL DEFAULT 0,
    last_used_at       timestamptz,
    revoked_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE uploads (
    id                 bigserial PRIMARY KEY,
    account_id         bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token              text NOT NULL UNIQUE,     -- first half of the public file_path
    file_name          text NOT NULL,
    file_size          bigint NOT NULL,
    content_type       text,
    storage_path       text NOT NULL,            -- relative to the storage root
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_account ON uploads (account_id);

CREATE TABLE jobs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id         bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    api_key_id         bigint REFERENCES api_keys (id) ON DELETE SET NULL,
    filetype           text NOT NULL,
    input_format       text NOT NULL,
    output_format      text NOT NULL,
    options            jsonb NOT NULL DEFAULT '{}',
    input_uploads      bigint[] NOT NULL,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'processing', 'finished', 'failed')),
    progress           real NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    error              text,
    error_hint         text,
    attempts           integer NOT NULL DEFAULT 0,
    version            integer NOT NULL DEFAULT 0, -- bumped on every change; orders events
    output_path        text,
    output_name        text,
    output_size        bigint,
    output_items       jsonb NOT NULL DEFAULT '[]',
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_account_created ON jobs (account_id, created_at DESC, id DESC);
