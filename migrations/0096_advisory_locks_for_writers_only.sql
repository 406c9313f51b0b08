-- PostgreSQL lets any login take any advisory lock. The service serialises each tenant's claims, its fast path's ceiling
-- check (0084, 0093) and its audit tree on advisory keys, and Marten's async daemon elects its leader with one: a
-- read-only login holding a tenant's key stalled that tenant's runs (503 after 30 s) and checkpoints, and one holding the
-- daemon's key would keep every node from running the daemon. In this database the advisory-lock functions are therefore
-- for the service's login and the eraser only (superusers, who run migrations, keep them regardless): for the auditor
-- they are "permission denied". Needs a superuser, as migrations run (pg_catalog's functions are its own).
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg\_%advisory%'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO sandbox_app, sandbox_eraser', f);
    END LOOP;
END $$;
