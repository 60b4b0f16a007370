#!/usr/bin/env python3
"""Run a single-node Kafka (KRaft, broker+controller) for local development and tests.

Stdlib only, so it works with the plain system ``python3`` before any virtualenv exists.
Kafka comes from Maven Central jars (resolved once with ``mvn`` into a cache outside git),
and the broker runs as a detached ``java`` process.

Usage::

    python3 scripts/kafka_local.py start                 # idempotent; waits until clients are served
    python3 scripts/kafka_local.py status                # exit 0 if the broker answers, else 1
    python3 scripts/kafka_local.py create-topics orders:8 events   # NAME[:PARTITIONS], default 4
    python3 scripts/kafka_local.py logs [-n 100] [-f]
    python3 scripts/kafka_local.py stop                  # SIGTERM, SIGKILL after 30 s; idempotent

From Python (e.g. a pytest fixture)::

    import kafka_local
    bootstrap = kafka_local.ensure_started()     # "127.0.0.1:9092"
    kafka_local.create_topics({"orders": 8})
    kafka_local.stop()

Environment:

    TOKEN_REFRESH_CACHE     jar cache root (default ~/.cache/token-refresh)
    KAFKA_LOCAL_DIR         state dir: config, data, pid, broker.log (default <repo>/.local/kafka)
    KAFKA_PORT              client listener port (default 9092)
    KAFKA_CONTROLLER_PORT   KRaft controller port (default 9093)
    KAFKA_NUM_PARTITIONS    default partitions for auto-created topics (default 4)
    KAFKA_HEAP_OPTS         JVM heap flags (default "-Xms256m -Xmx512m")
    KAFKA_START_TIMEOUT     seconds to wait for the broker to serve clients (default 300: a
                            broker holding thousands of test topics loads them for minutes)
    KAFKA_EXTRA_PROPERTIES  a file of ``key=value`` lines added to the generated server.properties,
                            replacing a generated key of the same name (e.g. SASL listeners and an
                            authorizer: tests/support/acl_broker.py). The PLAINTEXT listener on
                            KAFKA_PORT must stay: readiness and ``create-topics`` speak to it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
SLF4J_RELOAD4J_VERSION = "1.7.36"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
HOST = "127.0.0.1"
NODE_ID = 1
DEFAULT_PARTITIONS = 4
STOP_TIMEOUT = 30.0
TOPIC_TIMEOUT = 30.0
LOG_TAIL_LINES = 40

T = TypeVar("T")

REPO_DIR = Path(__file__).resolve().parent.parent

POM_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.token-refresh</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Everything goes to stdout, which the launcher appends to <state>/broker.log.
LOG4J_PROPERTIES = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.state.change.logger=WARN
"""

# Kafka protocol bits used below (non-flexible request versions, supported by 3.x and 4.x brokers).
API_CREATE_TOPICS, CREATE_TOPICS_VERSION = 19, 2
API_METADATA, METADATA_VERSION = 3, 4
ERROR_TOPIC_ALREADY_EXISTS = 36
CLIENT_ID = "kafka_local.py"
SOCKET_TIMEOUT = 5.0


class KafkaLocalError(RuntimeError):
    """Raised when the local broker cannot be provisioned, started or used."""


@dataclass(frozen=True)
class Config:
    cache_dir: Path
    state_dir: Path
    port: int
    controller_port: int
    num_partitions: int
    heap_opts: str
    start_timeout: float
    extra_properties: Path | None = None

    @classmethod
    def from_env(cls) -> Config:
        cache_root = os.environ.get("TOKEN_REFRESH_CACHE") or Path.home() / ".cache" / "token-refresh"
        return cls(
            cache_dir=Path(cache_root) / f"kafka-{KAFKA_VERSION}",
            state_dir=Path(os.environ.get("KAFKA_LOCAL_DIR") or REPO_DIR / ".local" / "kafka"),
            port=int(os.environ.get("KAFKA_PORT", "9092")),
            controller_port=int(os.environ.get("KAFKA_CONTROLLER_PORT", "9093")),
            num_partitions=int(os.environ.get("KAFKA_NUM_PARTITIONS", str(DEFAULT_PARTITIONS))),
            heap_opts=os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m"),
            start_timeout=float(os.environ.get("KAFKA_START_TIMEOUT", "300")),
            extra_properties=Path(extra) if (extra := os.environ.get("KAFKA_EXTRA_PROPERTIES")) else None,
        )

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / "libs"

    @property
    def libs_stamp(self) -> Path:
        return self.cache_dir / "libs.complete"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def server_properties(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.state_dir / "log4j.properties"


# --------------------------------------------------------------------------- tools & jars


def _apt_install(package: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise KafkaLocalError(f"{package} is required; install it (e.g. apt-get install -y {package})")
    print(f"Installing {package} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], check=True, env=env)


def _ensure_command(command: str, package: str) -> None:
    if not shutil.which(command):
        _apt_install(package)


def ensure_jars(cfg: Config) -> None:
    """Resolve the Kafka runtime jars into the cache unless a completed copy is already there."""
    if cfg.libs_stamp.exists():
        return
    _ensure_command("mvn", "maven")
    print(f"Resolving Kafka {KAFKA_VERSION} jars from Maven Central into {cfg.libs_dir} ...", flush=True)
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    pom = cfg.cache_dir / "pom.xml"
    pom.write_text(POM_TEMPLATE.format(kafka=KAFKA_VERSION, scala=SCALA_VERSION, slf4j=SLF4J_RELOAD4J_VERSION))
    staging = cfg.cache_dir / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    # Output is captured because Maven 3.8's -q still emits stray ANSI resets; shown only on failure.
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise KafkaLocalError(f"mvn could not resolve the Kafka jars:\n{result.stdout}{result.stderr}")
    shutil.rmtree(cfg.libs_dir, ignore_errors=True)
    staging.rename(cfg.libs_dir)
    cfg.libs_stamp.write_text(f"kafka {KAFKA_VERSION}\n")


# --------------------------------------------------------------------------- config & storage


def _server_properties(cfg: Config) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{cfg.controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{cfg.port},CONTROLLER://{HOST}:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{cfg.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": cfg.data_dir,
        "num.partitions": cfg.num_partitions,
        "default.replication.factor": 1,
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "log.retention.hours": 24,
        "log.retention.bytes": 256 * 1024 * 1024,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.retention.check.interval.ms": 5 * 60 * 1000,
    }
    settings.update(_extra_properties(cfg))
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _extra_properties(cfg: Config) -> dict[str, object]:
    """KAFKA_EXTRA_PROPERTIES' ``key=value`` lines (blank lines and ``#`` comments skipped)."""
    if cfg.extra_properties is None:
        return {}
    settings: dict[str, object] = {}
    for line in cfg.extra_properties.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals:
            raise KafkaLocalError(f"{cfg.extra_properties}: not a key=value line: {key.strip()[:40]!r}")
        settings[key.strip()] = value.strip()
    return settings


def write_config(cfg: Config) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.server_properties.write_text(_server_properties(cfg))
    cfg.log4j_properties.write_text(LOG4J_PROPERTIES)


def _java_command(cfg: Config, main_class: str, *args: str) -> list[str]:
    return [
        "java",
        *cfg.heap_opts.split(),
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{cfg.log4j_properties}",
        "-cp",
        str(cfg.libs_dir / "*"),
        main_class,
        *args,
    ]


def _new_cluster_id() -> str:
    """A random Kafka Uuid in its base64url form; like Kafka, avoid a leading '-' (CLI-unfriendly)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def ensure_formatted(cfg: Config) -> None:
    """Format the KRaft log dir once; meta.properties marks a formatted dir."""
    if (cfg.data_dir / "meta.properties").exists():
        return
    cluster_id = _new_cluster_id()
    print(f"Formatting {cfg.data_dir} (cluster id {cluster_id}) ...", flush=True)
    result = subprocess.run(
        _java_command(
            cfg,
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "--cluster-id",
            cluster_id,
            "--config",
            str(cfg.server_properties),
        ),
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise KafkaLocalError(f"StorageTool format failed:\n{result.stdout}{result.stderr}")


# --------------------------------------------------------------------------- process management


def _read_pid(cfg: Config) -> int | None:
    try:
        return int(cfg.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_broker_process(pid: int) -> bool:
    """True if pid is a live (non-zombie) kafka.Kafka JVM; guards against stale or reused pids."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline


def running_pid(cfg: Config) -> int | None:
    pid = _read_pid(cfg)
    return pid if pid is not None and _is_broker_process(pid) else None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _rotate_log(cfg: Config) -> None:
    if cfg.log_file.exists():
        cfg.log_file.replace(cfg.log_file.with_name(cfg.log_file.name + ".1"))


def launch(cfg: Config) -> int:
    """Start the broker JVM detached (own session, reparented to init) and record its pid."""
    _rotate_log(cfg)
    # sh backgrounds java and exits at once, so the JVM is never a child (or zombie) of this process.
    detach = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    command = _java_command(cfg, "kafka.Kafka", str(cfg.server_properties))
    out = subprocess.run(
        ["sh", "-c", detach, "sh", str(cfg.log_file), *command],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    ).stdout
    pid = int(out.strip())
    cfg.pid_file.write_text(f"{pid}\n")
    return pid


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open(errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except FileNotFoundError:
        return f"(no log at {path})\n"


def _startup_failure(cfg: Config, reason: str) -> KafkaLocalError:
    return KafkaLocalError(f"{reason}\n--- last {LOG_TAIL_LINES} lines of {cfg.log_file} ---\n{tail(cfg.log_file)}")


def wait_until_ready(cfg: Config, pid: int) -> None:
    """Poll with Metadata requests until the broker lists itself; fail fast if the JVM dies."""
    deadline = time.monotonic() + cfg.start_timeout
    while time.monotonic() < deadline:
        if not _is_broker_process(pid):
            raise _startup_failure(cfg, f"Kafka process {pid} exited during startup.")
        if broker_ready(cfg):
            return
        time.sleep(0.5)
    raise _startup_failure(
        cfg,
        f"Kafka (pid {pid}) did not serve clients on {cfg.bootstrap} within {cfg.start_timeout:.0f} s; "
        "it was left running (`start` waits for it again, `stop` kills it).",
    )


def ensure_started() -> str:
    """Start the local broker unless it already runs; return the bootstrap address."""
    cfg = Config.from_env()
    pid = running_pid(cfg)
    if pid is not None and broker_ready(cfg):
        print(f"Kafka already running (pid {pid}) at {cfg.bootstrap}")
        return cfg.bootstrap
    started = time.monotonic()
    if pid is None:
        pid = _start_new(cfg)
    else:
        print(f"Kafka process {pid} exists but is not serving yet; waiting ...", flush=True)
    wait_until_ready(cfg, pid)
    elapsed = time.monotonic() - started
    print(f"Kafka {KAFKA_VERSION} ready at {cfg.bootstrap} (pid {pid}) after {elapsed:.1f} s")
    return cfg.bootstrap


def _start_new(cfg: Config) -> int:
    for port in (cfg.port, cfg.controller_port):
        if _port_open(port):
            raise KafkaLocalError(f"Port {port} is in use by a process not managed via {cfg.pid_file}.")
    _ensure_command("java", "default-jre-headless")
    ensure_jars(cfg)
    write_config(cfg)
    ensure_formatted(cfg)
    pid = launch(cfg)
    print(f"Started Kafka (pid {pid}); waiting for it to serve clients ...", flush=True)
    return pid


def stop() -> None:
    """Stop the local broker: SIGTERM, then SIGKILL after 30 s. No-op if it is not running."""
    cfg = Config.from_env()
    pid = running_pid(cfg)
    if pid is None:
        print("Kafka is not running")
        cfg.pid_file.unlink(missing_ok=True)
        return
    _signal(pid, signal.SIGTERM)
    if not _wait_for_exit(pid, STOP_TIMEOUT):
        print(f"Kafka (pid {pid}) still running after {STOP_TIMEOUT:.0f} s; sending SIGKILL", flush=True)
        _signal(pid, signal.SIGKILL)
        _wait_for_exit(pid, 5.0)
    cfg.pid_file.unlink(missing_ok=True)
    print(f"Kafka (pid {pid}) stopped")


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
        os.kill(pid, sig)


def _wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_broker_process(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


# --------------------------------------------------------------------------- Kafka wire protocol


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def _array(items: list[bytes]) -> bytes:
    return struct.pack(">i", len(items)) + b"".join(items)


class _Reader:
    """Sequential decoder for non-flexible Kafka response bodies."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self._data, self._pos)
        self._pos += struct.calcsize(fmt)
        return int(value)

    def int8(self) -> int:
        return self._unpack(">b")

    def int16(self) -> int:
        return self._unpack(">h")

    def int32(self) -> int:
        return self._unpack(">i")

    def string(self) -> str | None:
        length = self.int16()
        if length < 0:
            return None
        value = self._data[self._pos : self._pos + length].decode()
        self._pos += length
        return value

    def array(self, read_item: Callable[[], T]) -> list[T]:
        return [read_item() for _ in range(max(self.int32(), 0))]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _call(cfg: Config, api_key: int, version: int, body: bytes, timeout: float = SOCKET_TIMEOUT) -> _Reader:
    """Send one request (header v1) and return a reader over the response body (header v0)."""
    correlation_id = 1
    request = struct.pack(">hhi", api_key, version, correlation_id) + _string(CLIENT_ID) + body
    with socket.create_connection((HOST, cfg.port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        reader = _Reader(_recv_exact(sock, size))
    if reader.int32() != correlation_id:
        raise KafkaLocalError("unexpected correlation id in broker response")
    return reader


def _metadata(cfg: Config, topics: list[str]) -> tuple[list[int], dict[str, tuple[int, list[int]]]]:
    """Metadata v4: return broker ids and, per topic, (error code, leader id per partition)."""
    body = _array([_string(name) for name in topics]) + struct.pack(">?", False)
    reader = _call(cfg, API_METADATA, METADATA_VERSION, body)
    reader.int32()  # throttle_time_ms

    def broker() -> int:
        node_id = reader.int32()
        reader.string(), reader.int32(), reader.string()  # host, port, rack
        return node_id

    def partition() -> int:
        reader.int16(), reader.int32()  # error_code, partition_index
        leader = reader.int32()
        reader.array(reader.int32), reader.array(reader.int32)  # replicas, isr
        return leader

    def topic() -> tuple[str, tuple[int, list[int]]]:
        error_code, name = reader.int16(), reader.string() or ""
        reader.int8()  # is_internal
        return name, (error_code, reader.array(partition))

    brokers = reader.array(broker)
    reader.string(), reader.int32()  # cluster_id, controller_id
    return brokers, dict(reader.array(topic))


def broker_ready(cfg: Config) -> bool:
    """True if the broker answers a Metadata request with a non-empty broker list."""
    try:
        brokers, _ = _metadata(cfg, [])
    except (OSError, struct.error, KafkaLocalError):
        return False
    return bool(brokers)


def _create_topics_request(topics: dict[str, int], timeout_ms: int) -> bytes:
    def topic(name: str, partitions: int) -> bytes:
        no_assignments = no_configs = _array([])
        return _string(name) + struct.pack(">ih", partitions, 1) + no_assignments + no_configs

    entries = [topic(name, partitions) for name, partitions in topics.items()]
    return _array(entries) + struct.pack(">i?", timeout_ms, False)


def _send_create_topics(cfg: Config, topics: dict[str, int]) -> dict[str, int]:
    """CreateTopics v2; return error code per topic, raising on anything but success/exists."""
    timeout_ms = int(TOPIC_TIMEOUT * 1000)
    reader = _call(
        cfg,
        API_CREATE_TOPICS,
        CREATE_TOPICS_VERSION,
        _create_topics_request(topics, timeout_ms),
        timeout=TOPIC_TIMEOUT + SOCKET_TIMEOUT,
    )
    reader.int32()  # throttle_time_ms
    results = reader.array(lambda: (reader.string() or "", reader.int16(), reader.string()))
    failures = [
        f"{name}: error {code} {message or ''}".strip()
        for name, code, message in results
        if code not in (0, ERROR_TOPIC_ALREADY_EXISTS)
    ]
    if failures:
        raise KafkaLocalError("CreateTopics failed: " + "; ".join(failures))
    return {name: code for name, code, _ in results}


def _wait_for_leaders(cfg: Config, names: list[str]) -> dict[str, int]:
    """Wait until every partition of the topics has a leader; return partition counts."""
    deadline = time.monotonic() + TOPIC_TIMEOUT
    while True:
        _, topics = _metadata(cfg, names)
        if all(
            name in topics and topics[name][0] == 0 and topics[name][1] and min(topics[name][1]) >= 0 for name in names
        ):
            return {name: len(topics[name][1]) for name in names}
        if time.monotonic() >= deadline:
            raise KafkaLocalError(f"topics {names} have no leaders after {TOPIC_TIMEOUT:.0f} s")
        time.sleep(0.2)


def create_topics(topics: dict[str, int]) -> None:
    """Create topics (name -> partitions, replication factor 1) unless they exist; wait for leaders."""
    if not topics:
        return
    cfg = Config.from_env()
    try:
        codes = _send_create_topics(cfg, topics)
        partitions = _wait_for_leaders(cfg, list(topics))
    except OSError as exc:
        raise KafkaLocalError(f"cannot reach Kafka at {cfg.bootstrap} ({exc}); run `start` first") from exc
    for name in topics:
        state = "exists" if codes.get(name) == ERROR_TOPIC_ALREADY_EXISTS else "created"
        print(f"{name}: {state} ({partitions[name]} partitions)")


# --------------------------------------------------------------------------- CLI


def _parse_topic(spec: str) -> tuple[str, int]:
    name, _, partitions = spec.partition(":")
    try:
        count = int(partitions) if partitions else DEFAULT_PARTITIONS
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad partition count in {spec!r}") from None
    if not name or count < 1:
        raise argparse.ArgumentTypeError(f"bad topic spec {spec!r}; expected NAME[:PARTITIONS]")
    return name, count


def status() -> int:
    cfg = Config.from_env()
    pid = running_pid(cfg)
    if pid is None:
        print("Kafka is not running")
        return 1
    if not broker_ready(cfg):
        print(f"Kafka process {pid} is running but not serving clients at {cfg.bootstrap}")
        return 1
    print(f"Kafka {KAFKA_VERSION} running (pid {pid}) at {cfg.bootstrap}; state in {cfg.state_dir}")
    return 0


def show_logs(lines: int, follow: bool) -> None:
    log_file = Config.from_env().log_file
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", str(log_file)])
    sys.stdout.write(tail(log_file, lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start the broker (idempotent) and wait until it serves clients")
    commands.add_parser("stop", help="stop the broker (idempotent)")
    commands.add_parser("status", help="exit 0 if the broker serves clients")
    topics = commands.add_parser("create-topics", help="create topics (idempotent)")
    topics.add_argument("topics", nargs="+", type=_parse_topic, metavar="NAME[:PARTITIONS]")
    logs = commands.add_parser("logs", help="print the broker log")
    logs.add_argument("-n", "--lines", type=int, default=LOG_TAIL_LINES)
    logs.add_argument("-f", "--follow", action="store_true")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            ensure_started()
        elif args.command == "stop":
            stop()
        elif args.command == "status":
            return status()
        elif args.command == "create-topics":
            create_topics(dict(args.topics))
        else:
            show_logs(args.lines, args.follow)
    except (KafkaLocalError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
