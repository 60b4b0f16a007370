"""platform_connections: rows written in the seed's shape are scheduled (Node takeover).

The scan reads ``refresh_due_at``, which only this service computes. A writer that knows only
the seed's columns (the Node OAuth callback still running during a switch-over, an operator's
``UPDATE ... SET token_expires_at = ...``) leaves it missing, or as it was for the previous
expiry: such a row was never requested, or requested too late. A trigger fills it in once the
row is written, so the scan's query, its index and its plan stay as they are (measured on
1,000,000 rows, docs/takeover.md):

- INSERT without ``refresh_due_at`` but with an expiry;
- UPDATE that changes ``token_expires_at`` and leaves ``refresh_due_at`` as it was;
- UPDATE of the status back to a scanned one (``connected``, ``token_expired``) of a row with
  an expiry and no ``refresh_due_at`` (an operator reconnecting an ``error`` row by hand);
- a status written as NULL (the seed's column is nullable; its CHECK lets NULL through): it
  becomes ``connected``, the column's default, which every reader of the row (the API, the
  dashboard, the seed's Node code) takes it for; left NULL, it was never scanned.

The service's own writes set ``refresh_due_at`` with every new expiry, so the trigger's WHEN
clause leaves them alone; it is considered only for statements that name ``token_expires_at``
or ``status``, never for the scan's mark or the lease. The buffer is the seed's 5 minutes (at most
half of the token's known lifetime), as in migration 0003: the first refresh of such a row
reschedules it with the running settings. Existing rows left unscheduled by such writers
before this migration are scheduled by it. A no-op on SQLite (the seed ran on PostgreSQL only).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SCANNED = "('connected', 'token_expired')"
# An expiry edited by hand to the calendar's start is due since forever: not a year BC, which
# no reader of the row could decode (the engine clamps the same way, decisions.refresh_at).
_DUE = (
    "CASE WHEN {row}.token_expires_at IS NULL THEN NULL ELSE GREATEST(TIMESTAMP '0001-01-01', "
    "{row}.token_expires_at - make_interval(secs => CASE WHEN {row}.token_lifetime_seconds > 0 "
    "THEN LEAST(300, {row}.token_lifetime_seconds * 0.5) ELSE 300 END)) END"
)

# An AFTER trigger that writes the row once more, rather than a BEFORE trigger that edits NEW:
# a table with a BEFORE ROW UPDATE trigger has every UPDATE fetch and lock the old row for it
# first, whatever the trigger's columns, so the scan's mark, the lease and the engine's
# outcomes would pay for it (measured: docs/takeover.md). An AFTER trigger's column list and
# WHEN clause are checked before anything is done, and only writes of the seed's shape (rare)
# pay for the second write. That write leaves the status set and the schedule computed, so the
# trigger's WHEN clause is false for it: it does not fire again.
FUNCTION = f"""
CREATE FUNCTION platform_connections_schedule_foreign_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE platform_connections
    SET status = COALESCE(status, 'connected'),
        refresh_due_at = CASE WHEN platform = 'github' THEN refresh_due_at
                              ELSE {_DUE.format(row="platform_connections")} END
    WHERE id = NEW.id;
    RETURN NULL;
END
$$
"""  # noqa: S608 - constant SQL

ON_INSERT = """
CREATE TRIGGER platform_connections_schedule_insert
AFTER INSERT ON platform_connections
FOR EACH ROW
WHEN (
    NEW.status IS NULL
    OR (NEW.refresh_due_at IS NULL AND NEW.token_expires_at IS NOT NULL AND NEW.platform <> 'github')
)
EXECUTE FUNCTION platform_connections_schedule_foreign_write()
"""

ON_UPDATE = f"""
CREATE TRIGGER platform_connections_schedule_update
AFTER UPDATE OF token_expires_at, status ON platform_connections
FOR EACH ROW
WHEN (
    NEW.status IS NULL
    OR NEW.platform <> 'github' AND (
        (NEW.token_expires_at IS DISTINCT FROM OLD.token_expires_at
         AND NEW.refresh_due_at IS NOT DISTINCT FROM OLD.refresh_due_at)
        OR (NEW.refresh_due_at IS NULL AND NEW.token_expires_at IS NOT NULL AND NEW.status IN {_SCANNED})
    )
)
EXECUTE FUNCTION platform_connections_schedule_foreign_write()
"""

BACKFILL = f"""
UPDATE platform_connections SET refresh_due_at = {_DUE.format(row="platform_connections")}
WHERE refresh_due_at IS NULL AND token_expires_at IS NOT NULL
  AND status IN {_SCANNED} AND platform <> 'github'
"""  # noqa: S608 - constant SQL


# 0003's schedule of the rows it found (an adopted Node table's among them) has no such clamp.
CLAMP = "UPDATE platform_connections SET refresh_due_at = TIMESTAMP '0001-01-01' WHERE refresh_due_at < '0001-01-01'"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute(ON_INSERT)
    op.execute(ON_UPDATE)
    op.execute(BACKFILL)
    op.execute(CLAMP)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER platform_connections_schedule_update ON platform_connections")
    op.execute("DROP TRIGGER platform_connections_schedule_insert ON platform_connections")
    op.execute("DROP FUNCTION platform_connections_schedule_foreign_write()")
