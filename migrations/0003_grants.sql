-- What each role may do. sandbox_app may insert and read events but never UPDATE, DELETE or TRUNCATE
-- them; other tables (streams, projections, progress, logs) it may maintain. Default privileges make
-- tables added by later migrations follow the same rules.
GRANT USAGE ON SCHEMA sandbox TO sandbox_app, sandbox_auditor;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA sandbox TO sandbox_app;
REVOKE UPDATE, DELETE, TRUNCATE ON sandbox.mt_events FROM sandbox_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA sandbox TO sandbox_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA sandbox TO sandbox_app;
REVOKE EXECUTE ON FUNCTION sandbox.mt_archive_stream(uuid) FROM sandbox_app;

GRANT SELECT ON ALL TABLES IN SCHEMA sandbox TO sandbox_auditor;

ALTER DEFAULT PRIVILEGES FOR ROLE sandbox_owner IN SCHEMA sandbox GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sandbox_app;
ALTER DEFAULT PRIVILEGES FOR ROLE sandbox_owner IN SCHEMA sandbox GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO sandbox_app;
ALTER DEFAULT PRIVILEGES FOR ROLE sandbox_owner IN SCHEMA sandbox GRANT EXECUTE ON FUNCTIONS TO sandbox_app;
ALTER DEFAULT PRIVILEGES FOR ROLE sandbox_owner IN SCHEMA sandbox GRANT SELECT ON TABLES TO sandbox_auditor;
