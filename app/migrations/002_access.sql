-- Access control: master tokens, per-key conversion limits, access tokens, the request log.

ALTER TABLE plans ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- One master token per account, stored as a SHA-256 hash like API keys; replacing the hash
-- is what invalidates the previous token at once.
ALTER TABLE accounts
    ADD COLUMN master_token_hash   bytea UNIQUE,
    ADD COLUMN master_token_prefix text,
    ADD COLUMN master_token_at     timestamptz;

-- A per-key consumption limit on top of the plan's allowance (ConvertAPI v2 "usage limits").
ALTER TABLE api_keys
    ADD COLUMN conversion_limit  bigint CHECK (conversion_limit >= 0),  -- NULL: only the plan's
    ADD COLUMN conversions_used  bigint NOT NULL DEFAULT 0;

-- ConvertAPI v1 access tokens: a request count and a lifetime; each use spends one request.
CREATE TABLE access_tokens (
    id                 bigserial PRIMARY KEY,
    token_hash         bytea NOT NULL UNIQUE,    -- sha256 of the token; the token is never stored
    prefix             text NOT NULL,
    account_id         bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    api_key_id         bigint NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    request_count      integer NOT NULL CHECK (request_count > 0),
    requests_left      integer NOT NULL CHECK (requests_left >= 0),
    valid_until        timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX access_tokens_account ON access_tokens (account_id);

-- Every authenticated request, for the account's administrators (master token).
CREATE TABLE request_log (
    id                 bigserial PRIMARY KEY,
    account_id         bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    at                 timestamptz NOT NULL DEFAULT now(),
    transport          text NOT NULL,            -- rest, graphql, graphql-ws
    route              text NOT NULL,            -- "POST /v1/convert", "mutation convert", ...
    status             integer NOT NULL,
    error_code         text,
    api_key_id         bigint REFERENCES api_keys (id) ON DELETE SET NULL,
    credential         text NOT NULL,            -- api_key, jwt, access_token, master
    client_ip          text
);
CREATE INDEX request_log_account_at ON request_log (account_id, at DESC, id DESC);
