"""The chaos run's figures judge the service, not physics: a rotation lost because its worker
was killed while the provider answered goes on its own informational row; any other loss
counts in full."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from chaoskit import figures  # scripts/ is not a package


def grant(rotated_at: float) -> dict[str, Any]:
    return {
        "spent_refresh_tokens": ["old"],
        "valid_refresh_tokens": ["new"],
        "live_refresh_token": "new",
        "refreshed_at": [rotated_at - 30, rotated_at],
        "double_spends": 1,
        "revoked": False,
    }


def evidence(kill_at: float, lost_at: dict[str, float]) -> figures.Evidence:
    connections = [figures.Connection(f"user-{gid}", "discord", gid) for gid in lost_at]
    stale = figures.StoredRow("needs_reauth", "at", "old", 0.0, 0.0)
    return figures.Evidence(
        connections=connections,
        grants={gid: grant(at) for gid, at in lost_at.items()},
        revoked_by_run={},
        fault_rules=[],
        rows={c.key: stale for c in connections},
        expiries={},
        refreshed_states={},
        outbox=[],
        records=[],
        topics={
            name: name
            for name in (
                "connection.created",
                "token.expiring",
                "token.refreshed",
                "token.needs_reauth",
                "token.refresh_failed",
            )
        },
        offsets={},
        texts=[],
        issued=set(),
        clean_started_at=kill_at + 100,
        kills=[kill_at],
        call_deadline=5.0,
    )


def test_only_a_loss_at_a_kill_is_set_apart() -> None:
    run = evidence(1000.0, {"at-kill": 1000.0 + 2, "just-before": 1000.0 - 0.5, "long-before": 1000.0 - 20})
    results = {figure.name: figure for figure in figures.compute(run)}
    apart = results["rotations in flight at a kill -9 (no client can keep them)"]
    assert apart.informational and sorted(apart.examples) == ["at-kill", "just-before"]
    assert results["rotated tokens lost"].examples == ["long-before"]
    assert results["double spends"].count == 1
    assert results["stranded connections"].count == 1
    assert results["false needs_reauth"].count == 1
    assert not any(figure.informational for name, figure in results.items() if not name.startswith("rotations in"))
