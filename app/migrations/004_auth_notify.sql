-- API nodes cache who a key or JWT belongs to for a few seconds (app/auth/cache.py). Any
-- change to what that answer depends on is announced, whoever makes it (API, CLI, SQL), so
-- every node drops its cache at once. Per-request counters (usage_count, last_used_at,
-- conversions_used) are not listed: they change on every call and are read fresh.
CREATE FUNCTION convertd_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('convertd_auth', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER api_keys_auth_changed
    AFTER UPDATE OF kid, account_id, name, key_hash, environment, restriction_type, allowed_ips,
        allowed_domains, allowed_endpoints, revoked_at, conversion_limit OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION convertd_auth_changed();

CREATE TRIGGER accounts_auth_changed
    AFTER UPDATE OF name, plan, active OR DELETE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION convertd_auth_changed();

CREATE TRIGGER plans_auth_changed
    AFTER UPDATE OR DELETE ON plans
    FOR EACH STATEMENT EXECUTE FUNCTION convertd_auth_changed();
