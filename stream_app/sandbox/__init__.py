"""Provider sandbox: a local test double of the OAuth providers' token endpoints.

It speaks each provider's dialect (providers.md), injects faults on demand and records
ground truth (grants, spent tokens, every token it issued, request counts) for tests.

    from stream_app.sandbox import SandboxServer
    with SandboxServer() as sandbox:
        grant = sandbox.create_grant("spotify")
        url = sandbox.token_url("spotify")

Routes: ``POST /{platform}/token`` (and ``POST /google/token``, shared by youtube, gmail
and google_calendar); ``POST /{platform}/revoke`` (RFC 7009, where the provider has such an
endpoint: :mod:`stream_app.sandbox.revocation`); admin: ``GET /_admin/revocations``,
``GET /_admin/health``, ``POST|GET /_admin/grants``,
``GET /_admin/grants/{id}``, ``POST /_admin/grants/{id}/revoke``,
``POST|GET|DELETE /_admin/faults``, ``POST|GET|DELETE /_admin/fault-rules`` (faults drawn at
random during a window: :mod:`stream_app.sandbox.rules`), ``POST /_admin/latency``, ``GET /_admin/issued``,
``GET /_admin/stats``, ``GET /_admin/requests``, ``POST /_admin/reset``.
"""

from .dialects import DIALECTS, PLATFORMS, Answer, Dialect, RateLimitStyle, Rotation
from .runner import SandboxServer
from .server import create_app, serve
from .state import Fault, FaultMode, Grant, SandboxError, SandboxState

__all__ = [
    "DIALECTS",
    "PLATFORMS",
    "Answer",
    "Dialect",
    "Fault",
    "FaultMode",
    "Grant",
    "RateLimitStyle",
    "Rotation",
    "SandboxError",
    "SandboxServer",
    "SandboxState",
    "create_app",
    "serve",
]
