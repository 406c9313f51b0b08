-- Roles and the schema. Applied as a superuser by `migrate`; passwords and LOGIN are set by `sbx up`,
-- never here, so no secret lives in the repository.
--   sandbox_owner   owns the schema and runs migrations
--   sandbox_app     what the service connects as: inserts and reads events, never updates or deletes them
--   sandbox_auditor read-only
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sandbox_owner') THEN CREATE ROLE sandbox_owner NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sandbox_app') THEN CREATE ROLE sandbox_app NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sandbox_auditor') THEN CREATE ROLE sandbox_auditor NOLOGIN; END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS sandbox AUTHORIZATION sandbox_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA sandbox FROM PUBLIC;
