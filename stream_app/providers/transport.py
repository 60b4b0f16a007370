"""The process's one HTTP transport: httpx's requests and responses over aiohttp's connection
pool, which holds up under hundreds of concurrent requests where httpx's own pool collapses
(encode/httpx#3215).

Token requests go to the transport itself, not through an ``httpx.AsyncClient``: the client's
URL merging, auth flow, redirect and cookie handling cost 40% more CPU per refresh (measured:
~550 against ~350 us), and a token request needs none of them (no redirects are followed, no
cookies kept, the credentials are set by the caller).

HTTP_PROXY / HTTPS_PROXY / NO_PROXY are honoured, looked up once per scheme, host and port:
aiohttp's own ``trust_env`` reads the environment and ~/.netrc on every request, in a thread,
which cost more than the request itself.
"""

from __future__ import annotations

import urllib.request

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class RoutedTransport(httpx.AsyncBaseTransport):
    """One aiohttp session; each request goes direct or through the proxy the environment
    names for its URL."""

    def __init__(self, max_connections: int) -> None:
        self._max_connections = max_connections
        self._ssl_context = httpx.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._by_proxy: dict[str | None, AiohttpTransport] = {}
        self._routes: dict[tuple[str, str, int | None], AiohttpTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.route(request.url).handle_async_request(request)

    def route(self, url: httpx.URL) -> AiohttpTransport:
        """The aiohttp transport (direct, or through a proxy) requests to ``url`` take."""
        key = (url.scheme, url.host, url.port)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._transport(environment_proxy(url))
        return route

    def _transport(self, proxy: str | None) -> AiohttpTransport:
        transport = self._by_proxy.get(proxy)
        if transport is None:
            transport = self._by_proxy[proxy] = AiohttpTransport(
                client=self._shared_session, proxy=httpx.Proxy(proxy) if proxy else None
            )
        return transport

    def _shared_session(self) -> aiohttp.ClientSession:
        """Opened on the first request, in the running loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl_context)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy HTTP(S)_PROXY names for ``url``, unless NO_PROXY exempts its host."""
    proxies = urllib.request.getproxies_environment()
    if urllib.request.proxy_bypass_environment(url.host, proxies):  # type: ignore[attr-defined]  # untyped in typeshed
        return None
    return proxies.get(url.scheme)


def build_http_transport(max_connections: int = 500) -> RoutedTransport:
    return RoutedTransport(max_connections)
