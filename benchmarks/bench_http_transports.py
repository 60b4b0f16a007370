#!/usr/bin/env python3
"""Refresh-token POSTs per second through each HTTP client the service could use.

httpx's own connection pool collapses when many requests are in flight at once
(encode/httpx#3215); the service therefore keeps httpx's API but gives it aiohttp's pool
(``httpx_aiohttp.AiohttpTransport``, see ``stream_app.providers.transport``).
This script shows the difference, and checks that the service's client really is the fast
one, against one local token endpoint:

- the endpoint is a tiny aiohttp server (``--serve``) in a separate process, so client and
  server do not share an event loop or a core. It parses each refresh_token grant form,
  sleeps ``--latency-ms`` and answers a fixed token JSON; it also counts the requests, the
  TCP connections they came on, the peak number in flight and its own CPU time;
- each client, in turn and in a fresh event loop, keeps ``--concurrency`` requests in
  flight, first for a warm-up, then for ``--requests`` requests or ``--seconds`` seconds,
  whichever comes first (plain httpx is slow enough for the time cap to end its run);
- every request is a realistic refresh_token grant (form body, client credentials in the
  form, ``Accept: application/json``), and its JSON answer is parsed and checked.

The table gives requests/s, p50/p99 latency, errors, the connections the server saw and the
ratio to plain ``httpx.AsyncClient`` with its default pool (the baseline) and to raw aiohttp,
both measured in the same run. ``--json`` prints the same as JSON.

    .venv/bin/python benchmarks/bench_http_transports.py
    .venv/bin/python benchmarks/bench_http_transports.py --concurrency 200 --seconds 5 --json

This is a script, not a timed test: ``tests/unit/test_bench_smoke.py`` only checks that it
runs and that every client gets its answers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

# A refresh token answer as providers send it (shape only; the values are fixed).
TOKEN_ANSWER = json.dumps(
    {
        "access_token": "at-" + "x" * 160,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "rt-" + "y" * 64,
        "scope": "user-read-email user-read-private",
    }
).encode()
TOKEN_PATH = "/oauth2/token"
BASELINE = "httpx"
REFERENCE = "aiohttp"

Post = Callable[[dict[str, str]], Awaitable[tuple[int, bytes]]]
Route = Callable[[], tuple[str, bool]]  # -> (the transport class used for the token URL, went through aiohttp?)
OpenClient = Callable[["Workload", str], AbstractAsyncContextManager[tuple[Post, Route]]]


# --------------------------------------------------------------------------- the endpoint


def serve(latency: float, host: str = "127.0.0.1", port: int = 0, announce: bool = True) -> None:
    """Run the token endpoint until killed; print ``PORT <n>`` once it listens."""
    from aiohttp import web

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    stats: dict[str, Any] = {}
    peers: set[Any] = set()

    def reset() -> None:
        peers.clear()
        stats.update(requests=0, rejected=0, in_flight=0, peak_in_flight=0, cpu=time.process_time())

    async def token(request: web.Request) -> web.Response:
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
        if request.transport is not None:
            peers.add(request.transport.get_extra_info("peername"))
        try:
            form = await request.post()
            if form.get("grant_type") != "refresh_token" or not form.get("refresh_token") or not form.get("client_id"):
                stats["rejected"] += 1
                return web.json_response({"error": "invalid_request"}, status=400)
            await asyncio.sleep(latency)
            return web.Response(body=TOKEN_ANSWER, content_type="application/json")
        finally:
            stats["in_flight"] -= 1

    async def read_stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": stats["requests"],
                "rejected": stats["rejected"],
                "connections": len(peers),
                "peak_in_flight": stats["peak_in_flight"],
                "cpu_seconds": time.process_time() - stats["cpu"],
            }
        )

    async def reset_stats(request: web.Request) -> web.Response:
        reset()
        return web.json_response({})

    async def main() -> None:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, token)
        app.router.add_get("/_stats", read_stats)
        app.router.add_post("/_stats/reset", reset_stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=4096).start()
        reset()
        if announce:
            sys.stdout.write(f"PORT {sock.getsockname()[1]}\n")
            sys.stdout.flush()
        await asyncio.Event().wait()

    with suppress(KeyboardInterrupt):
        asyncio.run(main())


class EndpointProcess:
    """The token endpoint in a child process (``python this_file --serve``)."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    def __enter__(self) -> EndpointProcess:
        command = [sys.executable, os.path.abspath(__file__), "--serve", "--latency-ms", str(self.latency * 1000)]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and file
            command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        # The child prints its port once it listens, or dies and so closes its stdout.
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("PORT "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the token endpoint did not start (it said {line!r})")
        self.base_url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    def _admin(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
            self.base_url + path, method=method, data=b"" if method == "POST" else None
        )
        with self._opener.open(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    async def reset_stats(self) -> None:
        await asyncio.to_thread(self._admin, "POST", "/_stats/reset")

    async def stats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._admin, "GET", "/_stats")


# --------------------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Workload:
    concurrency: int = 100
    requests: int = 20000
    seconds: float = 10.0
    warmup_requests: int | None = None  # None: two per slot of concurrency
    warmup_seconds: float = 2.0
    timeout: float = 10.0  # per request, every client; the service's HTTP_TIMEOUT_SECONDS default


@dataclass
class ClientResult:
    name: str
    description: str
    transport: str  # what actually carries this client's requests to the token URL
    aiohttp_pool: bool  # the requests went through an aiohttp connector
    requests: int = 0  # completed in the measured run, answered or failed
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    requests_per_second: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    client_cpu_percent: float = 0.0
    server_cpu_percent: float = 0.0
    server_connections: int = 0  # TCP connections the server saw during the measured run
    server_peak_in_flight: int = 0
    stopped_by: str = ""  # "requests" or "seconds"
    per_second: list[int] = field(default_factory=list)  # answers completed in each second of the run
    rounds_requests_per_second: list[float] = field(default_factory=list)  # every round; this result is the median
    rounds_errors: list[int] = field(default_factory=list)
    vs_baseline: float | None = None
    vs_aiohttp: float | None = None


@dataclass(frozen=True)
class ClientSpec:
    name: str
    description: str
    open: OpenClient


def _qualname(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _httpx_route(client: Any, url: str) -> Route:
    """Which transport httpx picks for ``url`` (mounts included), and whether it is aiohttp's."""
    import httpx

    return lambda: _describe_transport(client._transport_for_url(httpx.URL(url)))


def _describe_transport(transport: Any) -> tuple[str, bool]:
    """The transport's class, and whether it is aiohttp's and its pool was used."""
    from httpx_aiohttp import AiohttpTransport

    if isinstance(transport, AiohttpTransport):
        import aiohttp

        # The transport opens its aiohttp session on its first request: after the run it
        # must be there, holding the connections.
        session = transport.client
        used = isinstance(session, aiohttp.ClientSession) and isinstance(session.connector, aiohttp.BaseConnector)
        return _qualname(transport), used
    return _qualname(transport), False


def _httpx_client(make: Callable[[Workload], Any]) -> OpenClient:
    @asynccontextmanager
    async def open_client(workload: Workload, url: str) -> AsyncIterator[tuple[Post, Route]]:
        client = make(workload)
        headers = {"Accept": "application/json"}
        try:

            async def post(form: dict[str, str]) -> tuple[int, bytes]:
                response = await client.post(url, data=form, headers=headers)
                return response.status_code, response.content

            yield post, _httpx_route(client, url)
        finally:
            await client.aclose()

    return open_client


def _plain_httpx(workload: Workload) -> Any:
    import httpx

    # trust_env=False: a developer's HTTP(S)_PROXY must not route the localhost traffic.
    return httpx.AsyncClient(timeout=httpx.Timeout(workload.timeout), trust_env=False)


def _plain_httpx_raised(workload: Workload) -> Any:
    import httpx

    n = workload.concurrency
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    return httpx.AsyncClient(timeout=httpx.Timeout(workload.timeout), limits=limits, trust_env=False)


def _httpx_over_aiohttp(workload: Workload) -> Any:
    import httpx
    from httpx_aiohttp import AiohttpTransport

    n = workload.concurrency
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(workload.timeout))


@asynccontextmanager
async def _service(workload: Workload, url: str) -> AsyncIterator[tuple[Post, Route]]:
    """The service's own path: ``post_form`` on ``build_http_transport()``."""
    import httpx

    from stream_app.providers.client import post_form
    from stream_app.providers.transport import build_http_transport

    transport = build_http_transport(max_connections=workload.concurrency)
    headers = {"Accept": "application/json"}
    try:

        async def post(form: dict[str, str]) -> tuple[int, bytes]:
            status, _, body = await post_form(transport, url, form, headers, workload.timeout)
            return status, body or b""

        yield post, lambda: _describe_transport(transport.route(httpx.URL(url)))
    finally:
        await transport.aclose()


@asynccontextmanager
async def _raw_aiohttp(workload: Workload, url: str) -> AsyncIterator[tuple[Post, Route]]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=workload.concurrency)
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=workload.timeout))
    headers = {"Accept": "application/json"}
    try:

        async def post(form: dict[str, str]) -> tuple[int, bytes]:
            async with session.post(url, data=form, headers=headers) as response:
                return response.status, await response.read()

        yield post, lambda: (_qualname(connector), True)
    finally:
        await session.close()


CLIENTS: tuple[ClientSpec, ...] = (
    ClientSpec(BASELINE, "httpx.AsyncClient() - httpx's own pool, default limits", _httpx_client(_plain_httpx)),
    ClientSpec(
        "httpx-limits",
        "httpx.AsyncClient(limits=<concurrency>) - httpx's own pool, limits raised",
        _httpx_client(_plain_httpx_raised),
    ),
    ClientSpec(
        "httpx-aiohttp",
        "httpx.AsyncClient(transport=AiohttpTransport(limits=<concurrency>))",
        _httpx_client(_httpx_over_aiohttp),
    ),
    ClientSpec("service", "stream_app.providers.client.post_form(build_http_transport(), ...)", _service),
    ClientSpec(REFERENCE, "aiohttp.ClientSession(TCPConnector(limit=<concurrency>)) - no httpx", _raw_aiohttp),
)
CLIENT_NAMES = tuple(spec.name for spec in CLIENTS)


# --------------------------------------------------------------------------- the load


def _grant(sequence: int, prefix: str) -> dict[str, str]:
    """One refresh_token grant form, client credentials in the body (``client_secret_post``)."""
    return {
        "grant_type": "refresh_token",
        "refresh_token": f"{prefix}.{sequence:010d}",
        "client_id": "bench-client-0123456789",
        "client_secret": "bench-secret-" + "s" * 40,
    }


@dataclass
class _Run:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    cpu: float = 0.0
    stopped_by: str = "requests"
    per_second: Counter[int] = field(default_factory=Counter)  # answers completed in each second of the run


async def _drive(post: Post, concurrency: int, requests: int, seconds: float) -> _Run:
    """``concurrency`` workers issue requests until ``requests`` were started or ``seconds`` passed;
    the requests already in flight at the deadline are waited for and counted."""
    run = _Run()
    prefix = secrets.token_urlsafe(48)  # a provider-sized opaque refresh token
    issued = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < requests:
            if time.perf_counter() >= deadline:
                run.stopped_by = "seconds"
                return
            form = _grant(issued, prefix)
            issued += 1
            sent = time.perf_counter()
            try:
                status, content = await post(form)
                answer = json.loads(content)
                if status != 200:
                    run.errors[f"HTTP {status}"] += 1
                elif not isinstance(answer, dict) or not answer.get("access_token"):
                    run.errors["no access_token"] += 1
                else:
                    done = time.perf_counter()
                    run.latencies.append(done - sent)
                    run.per_second[int(done - start)] += 1
            except Exception as exc:  # a failed request is a result, not a crash
                run.errors[type(exc).__name__] += 1

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.elapsed = time.perf_counter() - start
    run.cpu = time.process_time() - cpu
    return run


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def _measure(spec: ClientSpec, workload: Workload, endpoint: EndpointProcess) -> ClientResult:
    async with spec.open(workload, endpoint.token_url) as (post, route):
        warmup = workload.warmup_requests if workload.warmup_requests is not None else 2 * workload.concurrency
        if warmup:
            await _drive(post, workload.concurrency, warmup, workload.warmup_seconds)
        await endpoint.reset_stats()
        run = await _drive(post, workload.concurrency, workload.requests, workload.seconds)
        server = await endpoint.stats()
        transport, aiohttp_pool = route()
    latencies = sorted(run.latencies)
    completed = len(latencies) + sum(run.errors.values())
    return ClientResult(
        name=spec.name,
        description=spec.description,
        transport=transport,
        aiohttp_pool=aiohttp_pool,
        requests=completed,
        ok=len(latencies),
        errors=sum(run.errors.values()),
        error_kinds=dict(run.errors),
        elapsed_seconds=run.elapsed,
        requests_per_second=len(latencies) / run.elapsed if run.elapsed else 0.0,
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        client_cpu_percent=100 * run.cpu / run.elapsed if run.elapsed else 0.0,
        server_cpu_percent=100 * server["cpu_seconds"] / run.elapsed if run.elapsed else 0.0,
        server_connections=server["connections"],
        server_peak_in_flight=server["peak_in_flight"],
        stopped_by=run.stopped_by,
        per_second=[run.per_second[second] for second in range(int(run.elapsed) + 1)],
    )


def run_benchmark(
    workload: Workload,
    latency: float = 0.020,
    clients: Sequence[str] = CLIENT_NAMES,
    progress: Callable[[str], None] | None = None,
    rounds: int = 1,
) -> list[ClientResult]:
    """Start the endpoint, measure each client in its own event loop, and compute the ratios.

    With several rounds the clients take turns (round-robin, so a burst of load from elsewhere
    on the machine hits them alike) and each client's result is its median round by requests/s.
    requests/s counts answered requests only; the ratios compare requests/s."""
    unknown = set(clients) - set(CLIENT_NAMES)
    if unknown:
        raise ValueError(f"unknown clients {sorted(unknown)}; known: {', '.join(CLIENT_NAMES)}")
    specs = [spec for spec in CLIENTS if spec.name in clients]
    measured: dict[str, list[ClientResult]] = {spec.name: [] for spec in specs}
    with EndpointProcess(latency) as endpoint:
        for round_number in range(1, rounds + 1):
            for spec in specs:
                if progress:
                    progress(f"[{round_number}/{rounds}] {spec.name}: {spec.description} ...")
                gc.collect()
                result = asyncio.run(_measure(spec, workload, endpoint))
                measured[spec.name].append(result)
                if progress:
                    progress(f"  {result.requests_per_second:,.0f} req/s, {result.errors} errors")
    results: list[ClientResult] = []
    for spec in specs:
        runs = measured[spec.name]
        median = sorted(runs, key=lambda r: r.requests_per_second)[(len(runs) - 1) // 2]
        median.rounds_requests_per_second = [r.requests_per_second for r in runs]
        median.rounds_errors = [r.errors for r in runs]
        results.append(median)
    by_name = {result.name: result for result in results}
    for result in results:
        for reference, attribute in ((BASELINE, "vs_baseline"), (REFERENCE, "vs_aiohttp")):
            other = by_name.get(reference)
            if other is not None and other.requests_per_second > 0:
                setattr(result, attribute, result.requests_per_second / other.requests_per_second)
    return results


# --------------------------------------------------------------------------- the report


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}x"


def _short_transport(result: ClientResult) -> str:
    name = result.transport.rsplit(".", 1)[-1]
    return f"{name} (aiohttp pool)" if result.aiohttp_pool else f"{name} (httpcore pool)"


def format_table(results: Sequence[ClientResult]) -> str:
    header = (
        "client",
        "transport actually used",
        "ok",
        "err",
        "req/s",
        "p50 ms",
        "p99 ms",
        "conns",
        "peak",
        "cli CPU",
        "srv CPU",
        f"vs {BASELINE}",
        f"vs {REFERENCE}",
    )
    rows = [
        (
            r.name,
            _short_transport(r),
            f"{r.ok:,}",
            f"{sum(r.rounds_errors or [r.errors]):,}",
            f"{r.requests_per_second:,.0f}",
            f"{r.p50_ms:,.1f}",
            f"{r.p99_ms:,.1f}",
            f"{r.server_connections:,}",
            f"{r.server_peak_in_flight:,}",
            f"{r.client_cpu_percent:.0f}%",
            f"{r.server_cpu_percent:.0f}%",
            _ratio(r.vs_baseline),
            _ratio(r.vs_aiohttp),
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    left = {0, 1}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def format_report(results: Sequence[ClientResult], environment: dict[str, Any], service_ok: bool) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in environment["versions"].items())
    load = environment.get("load_average_1min", {})
    lines = [f"{environment['machine']}; Python {environment['python']}; {versions}"]
    if load:
        lines[0] += f"; load average {load['before']:.2f} -> {load['after']:.2f}"
    rounds = environment["rounds"]
    ceiling = environment["ceiling_rps"]
    lines.append(
        f"endpoint latency {environment['latency_ms']:g} ms, {environment['concurrency']} in flight"
        + (f" (ceiling {ceiling:,.0f} req/s)" if ceiling else "")
        + f", {environment['requests']:,} requests or {environment['seconds']:g} s per client"
        + (f", median of {rounds} rounds" if rounds > 1 else "")
    )
    lines += ["", format_table(results), ""]
    for r in results:
        if r.stopped_by == "seconds":
            lines.append(f"{r.name}: stopped by the {environment['seconds']:g} s cap after {r.requests:,} requests")
        if r.error_kinds:
            lines.append(f"{r.name}: errors {r.error_kinds}")
        if len(r.rounds_requests_per_second) > 1:
            each = ", ".join(f"{rps:,.0f}" for rps in r.rounds_requests_per_second)
            lines.append(f"{r.name}: req/s in each round {each}")
    timelines = [r for r in results if len(r.per_second) > 2]
    if timelines:
        width = max(len(r.name) for r in timelines)
        lines.append("answers in each second of the (median) run, the last second partial:")
        lines += [f"  {r.name.ljust(width)}  " + " ".join(str(n) for n in r.per_second) for r in timelines]
    service = next((r for r in results if r.name == "service"), None)
    if service is not None:
        verdict = "goes through aiohttp's pool" if service_ok else "DOES NOT go through aiohttp's pool"
        lines.append(f"build_http_transport() {verdict}: httpx routed the token URL to {service.transport}")
    return "\n".join(lines)


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "versions": {name: version(name) for name in ("httpx", "httpcore", "httpx-aiohttp", "aiohttp")},
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "ceiling_rps": args.concurrency / (args.latency_ms / 1000) if args.latency_ms > 0 else None,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the endpoint's sleep per request (20)")
    parser.add_argument("--concurrency", type=int, default=100, help="requests in flight (100)")
    parser.add_argument("--requests", type=int, default=20000, help="measured requests per client (20000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="...or this many seconds per client (10)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per client (2 x concurrency)")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="warm-up time cap per client (2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, every client (10)")
    parser.add_argument(
        "--clients", default=",".join(CLIENT_NAMES), help=f"comma-separated subset of {','.join(CLIENT_NAMES)}"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every client this many times, take the median (1)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--serve", action="store_true", help="only run the token endpoint (POST /oauth2/token)")
    parser.add_argument("--port", type=int, default=0, help="the endpoint's port with --serve (any free one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve:
        serve(args.latency_ms / 1000, port=args.port)
        return 0
    if min(args.concurrency, args.requests, args.rounds) < 1 or args.seconds <= 0 or args.latency_ms < 0:
        _parser().error("--concurrency, --requests and --rounds must be >= 1, --seconds > 0, --latency-ms >= 0")
    workload = Workload(
        concurrency=args.concurrency,
        requests=args.requests,
        seconds=args.seconds,
        warmup_requests=args.warmup,
        warmup_seconds=args.warmup_seconds,
        timeout=args.timeout,
    )
    clients = [name.strip() for name in args.clients.split(",") if name.strip()]

    def progress(message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    load_before = os.getloadavg()[0]
    results = run_benchmark(
        workload, latency=args.latency_ms / 1000, clients=clients, progress=progress, rounds=args.rounds
    )
    environment = _environment(args)
    environment["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    service = next((r for r in results if r.name == "service"), None)
    service_ok = service is None or (service.aiohttp_pool and service.transport.endswith(".AiohttpTransport"))
    if args.json:
        document = {
            "environment": environment,
            "results": [asdict(r) for r in results],
            "service_uses_aiohttp": service_ok,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(format_report(results, environment, service_ok) + "\n")
    service_errors = 0 if service is None else sum(service.rounds_errors or [service.errors])
    return 0 if service_ok and not service_errors else 1


if __name__ == "__main__":
    sys.exit(main())
