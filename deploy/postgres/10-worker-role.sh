#!/bin/sh
# Creates the worker's least-privilege role (deploy/postgres/worker-role.sql) in the service's
# database. The postgres image runs this once, at the first start on an empty data volume, as
# its superuser; docker-compose.yml mounts it with the SQL file and passes WORKER_DB_ROLE and
# WORKER_DB_PASSWORD.
set -eu
: "${WORKER_DB_PASSWORD:?set WORKER_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="$POSTGRES_USER" \
  -v worker="${WORKER_DB_ROLE:-token_refresh_worker}" \
  -v worker_password="$WORKER_DB_PASSWORD" \
  -f /etc/token-refresh/worker-role.sql
