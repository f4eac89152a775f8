-- A key's two derived secrets (JWT signing, webhook signing) each have a generation: rotating
-- one bumps it, so the secret changes without revoking the key (app/auth/keys.py).
ALTER TABLE api_keys
    ADD COLUMN jwt_secret_version integer NOT NULL DEFAULT 0,
    ADD COLUMN webhook_secret_version integer NOT NULL DEFAULT 0;

-- a rotated JWT secret must be in force on every API node at once (their auth caches)
CREATE TRIGGER api_keys_secret_rotated
    AFTER UPDATE OF jwt_secret_version ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION convertd_auth_changed();
