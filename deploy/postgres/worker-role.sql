-- The worker's least-privilege database role: it reads and writes the service's rows and
-- nothing else (no CREATE, ALTER, DROP or TRUNCATE; no other database). Migrations run as the
-- owner role, which creates the tables; the default privileges below give the worker its
-- rights on every table and sequence the owner creates later, and the GRANT ... ON ALL lines
-- on those that exist already. Idempotent: run it again to change the password.
--
-- psql variables (psql -v name=value):
--   owner            the role that runs `token-refresh migrate` and owns the tables
--   worker           the worker's role, e.g. token_refresh_worker
--   worker_password  its password
-- Run by the postgres container's init (deploy/postgres/10-worker-role.sh) as the superuser,
-- in the service's database; by hand on an existing database:
--   psql -v ON_ERROR_STOP=1 -v owner=token_refresh -v worker=token_refresh_worker \
--        -v worker_password=... -d token_refresh -f deploy/postgres/worker-role.sql
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN', :'worker')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'worker') \gexec
SELECT format(
  'ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
  :'worker', :'worker_password'
) \gexec

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'worker') \gexec
-- PostgreSQL 15 no longer lets PUBLIC create in the public schema; older servers still do.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"worker";

ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"worker";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"worker";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"worker";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"worker";
