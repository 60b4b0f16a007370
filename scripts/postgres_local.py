#!/usr/bin/env python3
"""Run the Debian-packaged PostgreSQL cluster for local development and tests.

Stdlib only, so it works with the plain system ``python3`` before any virtualenv exists.
Needs root (or sudo) for ``apt-get``, ``pg_ctlcluster`` and running ``psql`` as ``postgres``.

Usage::

    python3 scripts/postgres_local.py start        # idempotent; prints the app database URL
    python3 scripts/postgres_local.py url [--test] # URL of token_refresh (or token_refresh_test)
    python3 scripts/postgres_local.py stop         # idempotent

``start`` installs PostgreSQL with apt if missing, starts the cluster (``PG_CLUSTER``, e.g.
``15/main``; default: the newest ``main`` cluster), waits for ``pg_isready``, creates the login
role ``token_refresh`` (password ``token_refresh``, CREATEDB) and the databases
``token_refresh`` and ``token_refresh_test`` owned by it, then checks a password login over TCP.

From Python::

    import postgres_local
    url = postgres_local.ensure_started()
    # -> postgresql+asyncpg://token_refresh:token_refresh@127.0.0.1:5432/token_refresh
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

ROLE = PASSWORD = "token_refresh"
DATABASES = {False: "token_refresh", True: "token_refresh_test"}
HOST = "127.0.0.1"
DEFAULT_PORT = 5432
READY_TIMEOUT = 30.0
# The suite runs in parallel processes, each with its own pools and worker processes: the
# default 100 connections run out.
MAX_CONNECTIONS = 400

ROLE_SQL = f"""
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
    ALTER ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}';
  ELSE
    CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}';
  END IF;
END
$$;
"""

# CREATE DATABASE cannot run inside DO/transactions, so let psql's \gexec run it only when missing.
DATABASE_SQL = "".join(
    f"SELECT 'CREATE DATABASE {name} OWNER {ROLE}' "
    f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{name}')\\gexec\n"
    for name in DATABASES.values()
)


class PostgresLocalError(RuntimeError):
    """Raised when the local PostgreSQL cluster cannot be provisioned or reached."""


@dataclass(frozen=True)
class Cluster:
    version: str
    name: str
    port: int
    online: bool


def url(test: bool = False, port: int | None = None, driver: str = "asyncpg") -> str:
    """SQLAlchemy URL of the app (or test) database."""
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    port = port or _port_of_cluster()
    return f"{scheme}://{ROLE}:{PASSWORD}@{HOST}:{port}/{DATABASES[test]}"


def _port_of_cluster() -> int:
    try:
        return find_cluster().port
    except PostgresLocalError:
        return DEFAULT_PORT


def _run(*command: str, input: str | None = None) -> str:
    result = subprocess.run(command, input=input, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise PostgresLocalError(f"`{' '.join(command)}` failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def _apt_install(package: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PostgresLocalError(f"{package} is required; install it (e.g. apt-get install -y {package})")
    print(f"Installing {package} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", package], check=True, env=env)


def _clusters() -> list[Cluster]:
    """Parse `pg_lsclusters`: Ver Cluster Port Status Owner Datadir Logfile."""
    rows = (line.split() for line in _run("pg_lsclusters", "--no-header").splitlines())
    return [
        Cluster(version=row[0], name=row[1], port=int(row[2]), online=row[3].startswith("online"))
        for row in rows
        if len(row) >= 4
    ]


def find_cluster() -> Cluster:
    """The cluster named by PG_CLUSTER (e.g. "15/main"), else the newest "main" cluster."""
    if not shutil.which("pg_lsclusters"):
        raise PostgresLocalError("PostgreSQL is not installed")
    clusters = _clusters()
    wanted = os.environ.get("PG_CLUSTER")
    if wanted:
        candidates = [c for c in clusters if f"{c.version}/{c.name}" == wanted]
    else:
        candidates = sorted((c for c in clusters if c.name == "main"), key=lambda c: float(c.version))
    if not candidates:
        raise PostgresLocalError(f"no PostgreSQL cluster {wanted or 'main'} found by pg_lsclusters")
    return candidates[-1]


def _ensure_max_connections(cluster: Cluster) -> bool:
    """Set max_connections in the cluster's configuration if lower; whether it changed (it
    takes effect at the next start)."""
    try:
        shown = _run("pg_conftool", cluster.version, cluster.name, "show", "-s", "max_connections").strip()
    except PostgresLocalError:  # not in the file: the default, 100
        shown = ""
    if shown.isdigit() and int(shown) >= MAX_CONNECTIONS:
        return False
    _run("pg_conftool", cluster.version, cluster.name, "set", "max_connections", str(MAX_CONNECTIONS))
    return True


def _wait_until_ready(cluster: Cluster) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    probe = ["pg_isready", "-q", "-h", HOST, "-p", str(cluster.port)]
    while subprocess.run(probe, check=False).returncode != 0:
        if time.monotonic() >= deadline:
            raise PostgresLocalError(f"PostgreSQL on port {cluster.port} not ready in {READY_TIMEOUT:.0f} s")
        time.sleep(0.3)


def _psql_as_postgres(cluster: Cluster, script: str) -> None:
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else ["sudo", "-u", "postgres"]
    _run(
        *as_postgres,
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-p",
        str(cluster.port),
        "-d",
        "postgres",
        input=script,
    )


def _check_password_login(cluster: Cluster) -> None:
    """Log in over TCP with the role's password (scram via Debian's default pg_hba `host` rules)."""
    _run("psql", "-X", "-qAt", url(port=cluster.port, driver=""), "-c", "select 1")


def ensure_started() -> str:
    """Start the cluster, provision role and databases (idempotent); return the app database URL."""
    if not shutil.which("pg_lsclusters"):
        _apt_install("postgresql")
    cluster = find_cluster()
    reconfigured = _ensure_max_connections(cluster)
    if cluster.online and not reconfigured:
        print(f"PostgreSQL {cluster.version}/{cluster.name} already running on port {cluster.port}")
    elif cluster.online:
        print(f"Restarting PostgreSQL {cluster.version}/{cluster.name} (max_connections {MAX_CONNECTIONS}) ...")
        _run("pg_ctlcluster", cluster.version, cluster.name, "restart")
    else:
        print(f"Starting PostgreSQL {cluster.version}/{cluster.name} on port {cluster.port} ...", flush=True)
        _run("pg_ctlcluster", cluster.version, cluster.name, "start")
    _wait_until_ready(cluster)
    _psql_as_postgres(cluster, ROLE_SQL + DATABASE_SQL)
    _check_password_login(cluster)
    return url(port=cluster.port)


def stop() -> None:
    """Stop the cluster if it is running."""
    cluster = find_cluster()
    if not cluster.online:
        print(f"PostgreSQL {cluster.version}/{cluster.name} is not running")
        return
    _run("pg_ctlcluster", cluster.version, cluster.name, "stop")
    print(f"PostgreSQL {cluster.version}/{cluster.name} stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start and provision (idempotent); print the database URL")
    commands.add_parser("stop", help="stop the cluster (idempotent)")
    url_parser = commands.add_parser("url", help="print the database URL")
    url_parser.add_argument("--test", action="store_true", help="URL of the test database")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            print(ensure_started())
        elif args.command == "stop":
            stop()
        else:
            print(url(test=args.test))
    except (PostgresLocalError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
