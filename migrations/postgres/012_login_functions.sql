-- The login path's steps as server-side functions, so each costs the service one
-- statement instead of one per query (see docs/performance.md).

-- Serialises the starts for one address until the caller's transaction ends, then
-- returns the creation time of its pending code (NULL without one). Each statement of a
-- function reads a new snapshot: the read sees every start that held the lock before.
CREATE FUNCTION otpgate_lock_code(p_address TEXT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    previous BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_address, 0));
    SELECT created_at INTO previous FROM otp_challenges WHERE address = p_address;
    RETURN previous;
END
$$;

-- Records a completed login in one statement, hence one transaction: the linked address's
-- uid, the user (its row locked until the end, so logins of one user run one at a time),
-- joined notices for a first phone login (p_joined_payload NULL for other addresses),
-- the session with stale and evicted ones removed, the consumed code (p_otp_hash NULL
-- for none) and the audit event.
CREATE FUNCTION otpgate_record_login(
    p_address TEXT, p_uid TEXT, p_name TEXT, p_now BIGINT, p_address_hash BIGINT, p_joined_payload TEXT,
    p_token_sha256 TEXT, p_appid TEXT, p_device TEXT, p_now_ms BIGINT, p_expires_at BIGINT, p_max_devices BIGINT,
    p_otp_hash BYTEA, p_event TEXT,
    OUT o_user_id BIGINT, OUT o_first_login BOOLEAN, OUT o_name TEXT, OUT o_status TEXT, OUT o_photo TEXT,
    OUT o_thumbnail BYTEA, OUT o_notified BIGINT, OUT o_evicted_appids TEXT[], OUT o_evicted_devices TEXT[])
LANGUAGE plpgsql AS $$
DECLARE
    linked BIGINT;
    v_via TEXT := '';
    v_sessions BIGINT;
BEGIN
    o_notified := 0;
    o_evicted_appids := '{}';
    o_evicted_devices := '{}';
    UPDATE linked_addresses SET uid = p_uid WHERE address = p_address RETURNING linked_addresses.user_id INTO linked;
    -- A changed name is a profile change: bump ts so contacts' next sync sees it.
    IF linked IS NOT NULL THEN
        UPDATE users AS u SET last_login = p_now,
            ts = CASE WHEN p_name <> '' AND p_name <> u.name THEN p_now ELSE u.ts END,
            name = CASE WHEN p_name = '' THEN u.name ELSE p_name END
        WHERE u.id = linked
        RETURNING u.id, false, u.name, u.status, u.photo, u.thumbnail
        INTO STRICT o_user_id, o_first_login, o_name, o_status, o_photo, o_thumbnail;
        v_via := p_address;
    ELSE
        INSERT INTO users AS u (address, uid, name, created_at, last_login, ts, address_hash)
        VALUES (p_address, p_uid, p_name, p_now, p_now, p_now, p_address_hash)
        ON CONFLICT (address) DO UPDATE SET uid = excluded.uid, last_login = excluded.last_login,
            ts = CASE WHEN excluded.name <> '' AND excluded.name <> u.name THEN excluded.ts ELSE u.ts END,
            name = CASE WHEN excluded.name = '' THEN u.name ELSE excluded.name END
        RETURNING u.id, (u.xmax = 0), u.name, u.status, u.photo, u.thumbnail
        INTO STRICT o_user_id, o_first_login, o_name, o_status, o_photo, o_thumbnail;
    END IF;
    IF o_first_login AND p_joined_payload IS NOT NULL THEN
        INSERT INTO outbox (recipient, payload, created_at, next_attempt_at)
        SELECT u.address, p_joined_payload, p_now, p_now FROM contacts c JOIN users u ON u.id = c.owner_id
        WHERE c.phone_hash = p_address_hash AND u.id <> o_user_id ORDER BY u.id;
        GET DIAGNOSTICS o_notified = ROW_COUNT;
    END IF;
    IF NOT o_first_login THEN
        -- Expired sessions count against no limit.
        DELETE FROM sessions s WHERE s.user_id = o_user_id AND s.expires_at <= p_now_ms / 1000;
        IF p_device <> '' THEN
            DELETE FROM sessions s WHERE s.user_id = o_user_id AND s.appid = p_appid AND s.device = p_device;
        END IF;
    END IF;
    INSERT INTO sessions (token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at, via)
    VALUES (p_token_sha256, o_user_id, p_appid, p_device, p_now_ms / 1000, p_now_ms, p_expires_at, v_via)
    ON CONFLICT (token_sha256) DO UPDATE SET user_id = excluded.user_id, appid = excluded.appid, device = excluded.device,
        created_at = excluded.created_at, last_seen_ms = excluded.last_seen_ms, expires_at = excluded.expires_at, via = excluded.via;
    -- A new user id has no other session: nothing to evict.
    IF NOT o_first_login THEN
        SELECT count(*) INTO v_sessions FROM sessions s WHERE s.user_id = o_user_id;
        IF v_sessions > p_max_devices THEN
            WITH evicted AS (
                DELETE FROM sessions WHERE token_sha256 IN (
                    SELECT s.token_sha256 FROM sessions s WHERE s.user_id = o_user_id
                    ORDER BY s.token_sha256 = p_token_sha256 DESC, s.last_seen_ms DESC OFFSET p_max_devices)
                RETURNING sessions.appid, sessions.device)
            SELECT coalesce(array_agg(e.appid), '{}'), coalesce(array_agg(e.device), '{}')
            INTO o_evicted_appids, o_evicted_devices FROM evicted e;
        END IF;
    END IF;
    IF p_otp_hash IS NOT NULL THEN
        DELETE FROM otp_challenges WHERE address = p_address AND otp_hash = p_otp_hash;
    END IF;
    INSERT INTO audit_events (at, address_hash, event, detail) VALUES (p_now, p_address_hash, p_event, p_appid);
END
$$;
