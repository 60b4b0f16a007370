"""The sandbox's memory: grants (token families), queued faults and ground truth.

Pure Python, no HTTP. Every public method takes one lock and never awaits, so a check and
the spend that follows it are atomic, whether called from the server's event loop or from
a test thread.
"""

from __future__ import annotations

import enum
import random
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .dialects import (
    DIALECTS,
    GOOGLE,
    NEVER_REFRESHED,
    PLATFORMS,
    RateLimitStyle,
    Rotation,
)
from .rules import ANY_PLATFORM, FaultRules, rule_window

ACCESS_PREFIX = "sbx_at_"
REFRESH_PREFIX = "sbx_rt_"


def _token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24)  # 32 url-safe characters


class FaultMode(enum.StrEnum):
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    FORBIDDEN_HTML = "forbidden_html"
    INVALID_CLIENT = "invalid_client"
    ECHO_TOKEN = "echo_token"
    LOST_RESPONSE = "lost_response"  # extension: refresh processed, answer never arrives
    # Extension: an error answer in the dialect's shape echoing every encoding of every secret
    # the request carried (shape: bad_grant, wrong_client, code, page): stream_app.sandbox.echo.
    ECHO_SECRETS = "echo_secrets"
    # Extension: a hostile number (raw JSON text) in place of expires_in in a successful
    # refresh (the token is spent), or of the wait in a 429 (shape: expires_in, retry_after).
    HOSTILE_NUMBER = "hostile_number"


ECHO_SHAPES = ("bad_grant", "wrong_client", "code", "page")
# Which endpoint a queued fault answers: the token endpoint, or the RFC 7009 revocation one
# (stream_app.sandbox.revocation), which takes these modes only. Fault rules are the token endpoint's.
ENDPOINTS = ("token", "revoke")
REVOKE_FAULT_MODES = frozenset(
    {
        FaultMode.SERVER_ERROR,
        FaultMode.TIMEOUT,
        FaultMode.RATE_LIMIT,
        FaultMode.FORBIDDEN_HTML,
        FaultMode.INVALID_CLIENT,
        FaultMode.ECHO_TOKEN,
        FaultMode.LOST_RESPONSE,
    }
)
NUMBER_SHAPES = ("expires_in", "retry_after")
_MAX_NUMBER_TEXT = 10_000


class Verdict(enum.StrEnum):
    """What :meth:`SandboxState.refresh` decided about a presented refresh token."""

    OK = "success"
    UNKNOWN = "unknown_refresh_token"
    REUSED = "reused_refresh_token"  # spent before (single-use rotation)
    REVOKED = "revoked_refresh_token"
    EXPIRED = "expired_refresh_token"


class SandboxError(ValueError):
    """A bad admin request (unknown platform, bad fault parameters...)."""


@dataclass
class Grant:
    grant_id: str
    platform: str
    scope: str
    rotation: Rotation
    expires_in_override: int | None
    created_at: float
    live_access_token: str
    live_refresh_token: str
    valid_refresh_tokens: list[str]
    expires_in: int
    access_tokens: list[str] = field(default_factory=list)
    spent_refresh_tokens: list[str] = field(default_factory=list)
    refresh_count: int = 0
    revoked: bool = False
    revoked_reason: str | None = None
    last_refreshed_at: float | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    # Ground truth for chaos runs: when each refresh succeeded, when a spent single-use
    # refresh token was presented again (a double spend), when the grant was revoked.
    refreshed_at: list[float] = field(default_factory=list)
    double_spent_at: list[float] = field(default_factory=list)
    revoked_at: float | None = None

    @property
    def dialect(self) -> str:
        return PLATFORMS[self.platform].dialect

    def snapshot(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id,
            "platform": self.platform,
            "scope": self.scope,
            "rotation": self.rotation.value,
            "created_at": self.created_at,
            "live_refresh_token": self.live_refresh_token,
            "live_access_token": self.live_access_token,
            "valid_refresh_tokens": list(self.valid_refresh_tokens),
            "spent_refresh_tokens": list(self.spent_refresh_tokens),
            "access_tokens": list(self.access_tokens),
            "expires_in": self.expires_in,
            "refresh_count": self.refresh_count,
            "revoked": self.revoked,
            "revoked_reason": self.revoked_reason,
            "last_refreshed_at": self.last_refreshed_at,
            "in_flight": self.in_flight,
            "max_concurrent_requests": self.max_in_flight,
            "refreshed_at": list(self.refreshed_at),
            "double_spends": len(self.double_spent_at),
            "double_spent_at": list(self.double_spent_at),
            "revoked_at": self.revoked_at,
        }


@dataclass
class Fault:
    platform: str  # a platform key, or "google" for any of the three Google platforms
    mode: FaultMode
    count: int = 1
    retry_after: float = 1.0
    rate_limit_style: RateLimitStyle | None = None  # None: the provider's own style
    delay: float = 30.0
    status: int | None = None
    # A rate limit on the whole application (Discord's "global": true), not on one user.
    platform_wide: bool = False
    shape: str | None = None  # echo_secrets and hostile_number: which answer (ECHO/NUMBER_SHAPES)
    number: str | None = None  # hostile_number: the raw text sent as the number
    endpoint: str = "token"  # "token" or "revoke" (ENDPOINTS)

    def describe(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "endpoint": self.endpoint,
            "mode": self.mode.value,
            "count": self.count,
            "retry_after": self.retry_after,
            "rate_limit_style": self.rate_limit_style.value if self.rate_limit_style else None,
            "delay": self.delay,
            "status": self.status,
            "platform_wide": self.platform_wide,
            "shape": self.shape,
            "number": self.number,
        }


@dataclass(frozen=True)
class RefreshResult:
    verdict: Verdict
    grant: Grant | None = None
    access_token: str | None = None
    refresh_token: str | None = None  # None: the response carries no refresh_token
    expires_in: int | None = None
    rotated: bool = False


def _fault_from(spec: dict[str, Any], *, any_platform: bool = False) -> Fault:
    platform = str(spec.get("platform"))
    if platform not in PLATFORMS and platform != GOOGLE and not (any_platform and platform == ANY_PLATFORM):
        raise SandboxError(f"unknown platform {platform!r}")
    try:
        mode = FaultMode(str(spec.get("mode")))
    except ValueError:
        raise SandboxError(f"unknown fault mode {spec.get('mode')!r}") from None
    style = spec.get("rate_limit_style")
    try:
        fault = Fault(
            platform=platform,
            mode=mode,
            count=int(spec.get("count", 1)),
            retry_after=float(spec.get("retry_after", 1.0)),
            rate_limit_style=RateLimitStyle(style) if style is not None else None,
            delay=float(spec.get("delay", 30.0)),
            status=int(spec["status"]) if spec.get("status") is not None else None,
            platform_wide=bool(spec.get("platform_wide", False)),
            shape=_shape(mode, spec.get("shape")),
            number=_number_text(mode, spec.get("number")),
            endpoint=str(spec.get("endpoint", "token")),
        )
    except (TypeError, ValueError) as exc:
        raise SandboxError(f"bad fault parameters: {exc}") from None
    if fault.endpoint not in ENDPOINTS:
        raise SandboxError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
    if fault.endpoint == "revoke" and (mode not in REVOKE_FAULT_MODES or any_platform):
        modes = ", ".join(sorted(m.value for m in REVOKE_FAULT_MODES))
        raise SandboxError(f"the revocation endpoint takes queued faults of these modes only: {modes}")
    if fault.count < 1 or fault.retry_after < 0 or fault.delay < 0:
        raise SandboxError("count must be >= 1; retry_after and delay must be >= 0")
    if fault.status is not None and not 100 <= fault.status <= 599:
        raise SandboxError("status must be an HTTP status code")
    return fault


def _shape(mode: FaultMode, shape: Any) -> str | None:
    shapes = {FaultMode.ECHO_SECRETS: ECHO_SHAPES, FaultMode.HOSTILE_NUMBER: NUMBER_SHAPES}.get(mode)
    if shapes is None:
        if shape is not None:
            raise SandboxError(f"shape applies to echo_secrets and hostile_number only, not {mode.value}")
        return None
    chosen = shapes[0] if shape is None else str(shape)
    if chosen not in shapes:
        raise SandboxError(f"shape must be one of {', '.join(shapes)}")
    return chosen


def _number_text(mode: FaultMode, number: Any) -> str | None:
    if mode is not FaultMode.HOSTILE_NUMBER:
        if number is not None:
            raise SandboxError(f"number applies to hostile_number only, not {mode.value}")
        return None
    if not isinstance(number, str) or not number.isprintable() or not 0 < len(number) <= _MAX_NUMBER_TEXT:
        raise SandboxError(f"number must be the raw text to send, 1 to {_MAX_NUMBER_TEXT} printable characters")
    return number


class SandboxState:
    """All sandbox state. Thread-safe; no method awaits."""

    def __init__(
        self,
        history_size: int = 10_000,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._history_size = history_size
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._clear()

    def _clear(self) -> None:
        self._grants: dict[str, Grant] = {}
        self._by_refresh: dict[str, str] = {}  # every refresh token ever issued -> grant id
        self._faults: dict[str, deque[Fault]] = {}
        self._rules = FaultRules(self._rng)
        self._issued_access: list[str] = []
        self._issued_refresh: list[str] = []
        self._revocations: list[dict[str, Any]] = []
        self._stats: dict[str, Counter[str]] = {}
        self._history: deque[dict[str, Any]] = deque(maxlen=self._history_size)
        self._seq = 0
        self.latency = 0.0

    def reset(self) -> None:
        with self._lock:
            self._clear()

    # -- grants ---------------------------------------------------------------------------

    def create_grant(
        self,
        platform: str,
        expires_in: int | None = None,
        scope: str | None = None,
        rotation: str | Rotation | None = None,
    ) -> Grant:
        if platform in NEVER_REFRESHED:
            raise SandboxError(f"{platform!r} tokens never refresh: there is no token endpoint")
        if platform not in PLATFORMS:
            raise SandboxError(f"unknown platform {platform!r}")
        if expires_in is not None and (not isinstance(expires_in, int) or expires_in < 0):
            raise SandboxError("expires_in must be a non-negative integer")
        dialect = DIALECTS[PLATFORMS[platform].dialect]
        try:
            chosen = Rotation(rotation) if rotation is not None else dialect.rotation
        except ValueError:
            raise SandboxError(f"unknown rotation {rotation!r}") from None
        with self._lock:
            access, refresh = self._issue_access(), self._issue_refresh()
            grant = Grant(
                grant_id="grant_" + secrets.token_hex(8),
                platform=platform,
                scope=scope if scope is not None else PLATFORMS[platform].default_scope,
                rotation=chosen,
                expires_in_override=expires_in,
                created_at=self._clock(),
                live_access_token=access,
                live_refresh_token=refresh,
                valid_refresh_tokens=[refresh],
                expires_in=self._lifetime(platform, expires_in),
                access_tokens=[access],
            )
            self._grants[grant.grant_id] = grant
            self._by_refresh[refresh] = grant.grant_id
            return grant

    def grant(self, grant_id: str) -> Grant | None:
        with self._lock:
            return self._grants.get(grant_id)

    def grants(self) -> list[Grant]:
        with self._lock:
            return list(self._grants.values())

    def grant_for_refresh_token(self, token: str | None) -> Grant | None:
        with self._lock:
            grant_id = self._by_refresh.get(token) if token else None
            return self._grants.get(grant_id) if grant_id else None

    def revoke(self, grant_id: str, reason: str = "revoked") -> Grant | None:
        with self._lock:
            grant = self._grants.get(grant_id)
            if grant is not None and not grant.revoked:
                grant.revoked, grant.revoked_reason = True, reason
                grant.revoked_at = self._clock()
            return grant

    def revoke_token(self, dialect_name: str, token: str | None) -> Grant | None:
        """RFC 7009: the grant behind ``token`` (any refresh or access token it ever issued, at an
        endpoint of its dialect) revoked, whole; None when the token is unknown here."""
        if not token:
            return None
        with self._lock:
            grant = self.grant_for_refresh_token(token)
            if grant is None:
                grant = next((g for g in self._grants.values() if token in g.access_tokens), None)
            if grant is None or grant.dialect != dialect_name:
                return None
            if not grant.revoked:
                grant.revoked, grant.revoked_reason = True, "revoked_by_client"
                grant.revoked_at = self._clock()
            return grant

    def refresh(self, dialect_name: str, token: str) -> RefreshResult:
        """Check and spend ``token`` at an endpoint speaking ``dialect_name``, atomically."""
        with self._lock:
            grant = self.grant_for_refresh_token(token)
            if grant is None or grant.dialect != dialect_name:
                return RefreshResult(Verdict.UNKNOWN)
            if grant.revoked:
                verdict = Verdict.EXPIRED if grant.revoked_reason == "expired" else Verdict.REVOKED
                return RefreshResult(verdict, grant)
            if token not in grant.valid_refresh_tokens:
                grant.double_spent_at.append(self._clock())
                if DIALECTS[dialect_name].reuse_kills_family:
                    grant.revoked, grant.revoked_reason = True, "reuse_detected"
                    grant.revoked_at = self._clock()
                return RefreshResult(Verdict.REUSED, grant)
            return self._rotate(grant, token)

    def _rotate(self, grant: Grant, token: str) -> RefreshResult:
        access = self._issue_access()
        grant.live_access_token = access
        grant.access_tokens.append(access)
        grant.expires_in = self._lifetime(grant.platform, grant.expires_in_override)
        grant.refresh_count += 1
        grant.last_refreshed_at = self._clock()
        grant.refreshed_at.append(grant.last_refreshed_at)
        answer_refresh: str | None = token
        if grant.rotation in (Rotation.SINGLE_USE, Rotation.KEEP_OLD):
            answer_refresh = self._issue_refresh()
            self._by_refresh[answer_refresh] = grant.grant_id
            if grant.rotation is Rotation.SINGLE_USE:
                grant.valid_refresh_tokens.remove(token)
                grant.spent_refresh_tokens.append(token)
            grant.valid_refresh_tokens.append(answer_refresh)
            grant.live_refresh_token = answer_refresh
        elif grant.rotation is Rotation.NONE:
            answer_refresh = None
        return RefreshResult(
            Verdict.OK,
            grant,
            access_token=access,
            refresh_token=answer_refresh,
            expires_in=grant.expires_in,
            rotated=answer_refresh not in (None, token),
        )

    def _lifetime(self, platform: str, override: int | None) -> int:
        if override is not None:
            return override
        dialect = DIALECTS[PLATFORMS[platform].dialect]
        spread = dialect.expires_in_spread
        return dialect.expires_in + (self._rng.randint(-spread, spread) if spread else 0)

    def _issue_access(self) -> str:
        token = _token(ACCESS_PREFIX)
        self._issued_access.append(token)
        return token

    def _issue_refresh(self) -> str:
        token = _token(REFRESH_PREFIX)
        self._issued_refresh.append(token)
        return token

    @contextmanager
    def in_flight(self, grant: Grant | None) -> Iterator[None]:
        """Count concurrent token requests presenting one grant's tokens."""
        if grant is None:
            yield
            return
        with self._lock:
            grant.in_flight += 1
            grant.max_in_flight = max(grant.max_in_flight, grant.in_flight)
        try:
            yield
        finally:
            with self._lock:
                grant.in_flight -= 1

    # -- faults ---------------------------------------------------------------------------

    def add_fault(self, spec: dict[str, Any]) -> Fault:
        fault = _fault_from(spec)
        with self._lock:
            self._faults.setdefault(_queue_key(fault.platform, fault.endpoint), deque()).append(fault)
        return fault

    def take_fault(self, platform: str, endpoint: str = "token") -> Fault | None:
        """Consume one use of the next fault queued for ``platform`` at ``endpoint`` (for a
        Google platform, its own queue first, then the shared ``google`` queue); with none
        queued, draw from the active fault rules (token endpoint only). Returns a copy with count 1."""
        keys = [platform]
        if platform != GOOGLE and PLATFORMS.get(platform) and PLATFORMS[platform].dialect == GOOGLE:
            keys.append(GOOGLE)
        keys = [_queue_key(key, endpoint) for key in keys]
        with self._lock:
            for key in keys:
                queue = self._faults.get(key)
                if queue:
                    head = queue[0]
                    head.count -= 1
                    if head.count <= 0:
                        queue.popleft()
                    return Fault(**{**head.__dict__, "count": 1})
            if endpoint != "token":
                return None
            return self._rules.draw(platform, self._clock())

    def pending_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for q in self._faults.values() for f in q]

    def clear_faults(self) -> None:
        """Drop the queued faults and end every fault rule (rules stay listed as history)."""
        with self._lock:
            self._faults.clear()
            self._rules.end_all(self._clock())

    def add_fault_rule(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A rule answering ``probability`` of ``platform``'s requests (``"*"``: every
        platform) with the fault ``spec`` describes, from ``start_in`` seconds from now for
        ``duration`` seconds (none: until ended). See :mod:`stream_app.sandbox.rules`."""
        fault = _fault_from(spec, any_platform=True)
        try:
            window = rule_window(spec, self._clock())
        except (TypeError, ValueError) as exc:
            raise SandboxError(f"bad fault rule: {exc}") from None
        with self._lock:
            return self._rules.add(fault.platform, fault, window).describe(self._clock())

    def fault_rules(self) -> list[dict[str, Any]]:
        """Every rule ever added, ended ones included, with its window and hit count."""
        with self._lock:
            return self._rules.describe(self._clock())

    def end_fault_rules(self) -> None:
        with self._lock:
            self._rules.end_all(self._clock())

    # -- ground truth ---------------------------------------------------------------------

    def record(self, platform: str, outcome: str, **details: Any) -> None:
        """Count one token request; ``details`` must not contain token values."""
        with self._lock:
            self._stats.setdefault(platform, Counter())[outcome] += 1
            self._seq += 1
            self._history.append(
                {
                    "seq": self._seq,
                    "at": self._clock(),
                    "platform": platform,
                    "outcome": outcome,
                    **details,
                }
            )

    def record_revocation(self, platform: str, outcome: str, **details: Any) -> None:
        """One request to a revocation endpoint (kept apart from the token requests' stats and
        history); ``details`` must not contain token values."""
        with self._lock:
            self._seq += 1
            self._revocations.append(
                {"seq": self._seq, "at": self._clock(), "platform": platform, "outcome": outcome, **details}
            )

    def revocations(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._revocations)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_outcome: Counter[str] = Counter()
            for counter in self._stats.values():
                by_outcome.update(counter)
            return {
                "total": sum(by_outcome.values()),
                "by_outcome": dict(by_outcome),
                "by_platform": {p: {"total": sum(c.values()), "outcomes": dict(c)} for p, c in self._stats.items()},
            }

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._history)

    def issued(self) -> dict[str, list[str]]:
        with self._lock:
            return {
                "access_tokens": list(self._issued_access),
                "refresh_tokens": list(self._issued_refresh),
            }


def _queue_key(platform: str, endpoint: str) -> str:
    return platform if endpoint == "token" else f"{platform}/{endpoint}"
