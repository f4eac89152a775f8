-- One conversion taken from the account's allowance and from its key's own limit, in one
-- round trip (app/services/allowance.py): both or neither. The account's row is locked
-- first, then the key's, in the order a refund takes them. Returns NULL when taken, or
-- which allowance is spent: 'account' or 'key'.
CREATE FUNCTION convertd_spend(account bigint, api_key bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts a SET conversions_used = a.conversions_used + 1 FROM plans p
    WHERE a.id = account AND p.name = a.plan
      AND (p.conversions IS NULL OR a.conversions_used < p.conversions);
    IF NOT FOUND THEN
        RETURN 'account';
    END IF;
    IF api_key IS NOT NULL THEN
        UPDATE api_keys SET conversions_used = conversions_used + 1
        WHERE id = api_key AND (conversion_limit IS NULL OR conversions_used < conversion_limit);
        IF NOT FOUND THEN
            -- given back under the row lock the update above still holds: no one saw it
            UPDATE accounts SET conversions_used = conversions_used - 1 WHERE id = account;
            RETURN 'key';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
