"""``SandboxServer``: the sandbox on 127.0.0.1 (free port) in a background thread.

Usable from sync and async tests alike (its event loop is its own), and by tests that
start the service as a subprocess (pass it :meth:`SandboxServer.service_env`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from .dialects import GOOGLE, PLATFORMS, credential_key
from .revocation import REVOCATION_ROUTES
from .server import CLIENTS_KEY, create_app
from .state import SandboxState


class SandboxServer:
    def __init__(
        self,
        state: SandboxState | None = None,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 0.25,
    ) -> None:
        self.state = state if state is not None else SandboxState()
        self.app = create_app(self.state, credentials)
        self.host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="provider-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("provider sandbox did not start in time")
        if self._error is not None:
            raise RuntimeError(f"provider sandbox failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        self._thread = None
        self.port = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- addresses and configuration ------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the sandbox is not running")
        return f"http://{self.host}:{self.port}"

    def token_url(self, platform: str) -> str:
        """``/{platform}/token``; ``google`` gives the endpoint the Google platforms share."""
        if platform != GOOGLE and platform not in PLATFORMS:
            raise KeyError(f"no sandbox token endpoint for {platform!r}")
        return f"{self.base_url}/{platform}/token"

    def revocation_url(self, platform: str) -> str:
        """``/{platform}/revoke``; ``google`` gives the endpoint the Google platforms share."""
        if platform not in REVOCATION_ROUTES:
            raise KeyError(f"no sandbox revocation endpoint for {platform!r}")
        return f"{self.base_url}/{platform}/revoke"

    def admin_url(self, path: str = "") -> str:
        return f"{self.base_url}/_admin/{path.lstrip('/')}"

    def credentials(self, platform: str) -> tuple[str, str]:
        """The (client_id, client_secret) the sandbox accepts for ``platform``."""
        return self.app[CLIENTS_KEY].for_platform(platform)

    def service_env(self) -> dict[str, str]:
        """Environment for the service: ``<KEY>_TOKEN_URL``, ``<KEY>_CLIENT_ID`` and
        ``<KEY>_CLIENT_SECRET`` per credential key (``GOOGLE_*`` for the Google three), and
        ``<KEY>_REVOCATION_URL`` for those with a revocation endpoint."""
        env: dict[str, str] = {}
        for key in dict.fromkeys(credential_key(p) for p in PLATFORMS):
            client_id, secret = self.credentials(key)
            prefix = key.upper()
            env[f"{prefix}_TOKEN_URL"] = self.token_url(key)
            env[f"{prefix}_CLIENT_ID"] = client_id
            env[f"{prefix}_CLIENT_SECRET"] = secret
            if key in REVOCATION_ROUTES:
                env[f"{prefix}_REVOCATION_URL"] = self.revocation_url(key)
        return env

    # -- ground-truth shortcuts (same thread-safe state the admin API reads) ---------------

    def create_grant(self, platform: str, **options: Any) -> dict[str, Any]:
        return self.state.create_grant(platform, **options).snapshot()

    def __repr__(self) -> str:
        where = self.base_url if self.port else "stopped"
        return f"<SandboxServer {where}>"
