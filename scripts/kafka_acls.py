#!/usr/bin/env python3
"""The Kafka ACLs a token-refresh deployment needs, as `kafka-acls.sh` commands: printed, or applied.

Stdlib only. Each role gets what it was seen to need on a broker with
``allow.everyone.if.no.acl.found=false`` (tests/integration/test_kafka_acls.py), nothing more:

- the worker reads ``connection.created``, ``token.expiring`` and ``connection.disconnected``,
  writes ``token.expiring`` (its scan), the four outcome topics and the three ``.dlq`` topics,
  joins its consumer groups ``<app>`` (Faust's leader election, on the topic
  ``<app>-__assignor-__leader``), ``<app>-refresh``, ``<app>-ingest`` and ``<app>-disconnect``, and
  creates those topics if missing (``--topics-precreated`` leaves that out);
- producers write ``connection.created`` and ``connection.disconnected``, nothing else; trusted
  triggers (an admin tool asking for refreshes) write ``token.expiring``, nothing else;
- `token-refresh notify` (``--notify``) reads the outcome topics and ``connection.created`` (a
  re-connection is its "recovered" signal) in its group ``<app>-notify``, and writes (creates,
  unless ``--topics-precreated``) its dead-letter topic ``NOTIFY_DLQ_TOPIC`` (``notify.dlq``);
- other notifiers (``--notifier``, an outside team's consumer) read the outcome topics in their
  own consumer groups (``--notifier-group``), nothing else;
- operators replay dead letters (`token-refresh dlq replay`/`dlq show`): read the ``.dlq`` topics
  and the input topics (a letter without its value is read back from there), write the input
  topics, in the group ``<app>-dlq-replay``.

Usage::

    python3 scripts/kafka_acls.py commands --worker User:token-refresh --producer User:signup \\
        --notify User:token-refresh-notify --notifier User:mailer --notifier-group mailer
    python3 scripts/kafka_acls.py apply --bootstrap-server kafka:9092 --command-config admin.properties \\
        [--kafka-acls /opt/kafka/bin/kafka-acls.sh] --worker User:token-refresh ...

``apply`` runs ``--kafka-acls`` if given, else the `kafka-acls.sh` class (``kafka.admin.AclCommand``)
from the jars scripts/kafka_local.py caches. The app id and topic names default to the worker's
own settings (KAFKA_APP_ID, TOPIC_CONNECTION_CREATED, ..., NOTIFY_DLQ_TOPIC) read from the environment.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TOPIC_DEFAULTS = (
    "connection.created",
    "token.expiring",
    "token.refreshed",
    "token.needs_reauth",
    "token.refresh_failed",
    "connection.disconnected",
    "token.revoked",
    "provider.circuit_changed",
)
OUTCOMES = (
    "token.refreshed",
    "token.needs_reauth",
    "token.refresh_failed",
    "token.revoked",
    "provider.circuit_changed",
)
INPUTS = ("connection.created", "token.expiring", "connection.disconnected")
TOOLS_LOG4J = """log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


@dataclass(frozen=True)
class Grant:
    """One `kafka-acls.sh --add`: every principal gets every operation on every resource."""

    principals: tuple[str, ...]
    operations: tuple[str, ...]
    topics: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def arguments(self) -> list[str]:
        args = ["--add"]
        args += [arg for principal in self.principals for arg in ("--allow-principal", principal)]
        args += [arg for operation in self.operations for arg in ("--operation", operation)]
        args += [arg for topic in self.topics for arg in ("--topic", topic)]
        args += [arg for group in self.groups for arg in ("--group", group)]
        return args


def _env_topic(default_name: str) -> str:
    return os.environ.get("TOPIC_" + default_name.upper().replace(".", "_")) or default_name


def grants(args: argparse.Namespace) -> list[Grant]:
    app: str = args.app_id
    topic = {name: getattr(args, _dest(name)) for name in TOPIC_DEFAULTS}
    outcomes = tuple(topic[name] for name in OUTCOMES)
    inputs = tuple(topic[name] for name in INPUTS)
    dead_letters = tuple(f"{name}.dlq" for name in inputs)
    leader = f"{app}-__assignor-__leader"
    result: list[Grant] = []
    if args.worker:
        worker = tuple(args.worker)
        groups = (app, f"{app}-refresh", f"{app}-ingest", f"{app}-disconnect")
        result.append(Grant(worker, ("Read",), topics=(*inputs, leader), groups=groups))
        result.append(Grant(worker, ("Write",), topics=(topic["token.expiring"], *outcomes, *dead_letters)))
        if not args.topics_precreated:
            result.append(Grant(worker, ("Create",), topics=(*inputs, *outcomes, *dead_letters, leader)))
    if args.producer:
        producer_topics = (topic["connection.created"], topic["connection.disconnected"])
        result.append(Grant(tuple(args.producer), ("Write",), topics=producer_topics))
    if args.trigger:
        result.append(Grant(tuple(args.trigger), ("Write",), topics=(topic["token.expiring"],)))
    if args.notify:
        notify = tuple(args.notify)
        result.append(
            Grant(notify, ("Read",), topics=(*outcomes, topic["connection.created"]), groups=(f"{app}-notify",))
        )
        result.append(Grant(notify, ("Write",), topics=(args.notify_dlq_topic,)))
        if not args.topics_precreated:
            result.append(Grant(notify, ("Create",), topics=(args.notify_dlq_topic,)))
    if args.notifier:
        result.append(Grant(tuple(args.notifier), ("Read",), topics=outcomes, groups=tuple(args.notifier_group)))
    if args.operator:
        operator = tuple(args.operator)
        result.append(Grant(operator, ("Read",), topics=(*dead_letters, *inputs), groups=(f"{app}-dlq-replay",)))
        result.append(Grant(operator, ("Write",), topics=inputs))
    return result


def _dest(default_name: str) -> str:
    return "topic_" + default_name.replace(".", "_")


def _connection(args: argparse.Namespace) -> list[str]:
    return ["--bootstrap-server", args.bootstrap_server, "--command-config", args.command_config]


def print_commands(args: argparse.Namespace) -> None:
    bootstrap = shlex.quote(args.bootstrap_server) if args.bootstrap_server else '"$BOOTSTRAP"'
    config = shlex.quote(args.command_config) if args.command_config else '"$ADMIN_CONFIG"'
    for grant in grants(args):
        arguments = " ".join(shlex.quote(arg) for arg in grant.arguments())
        print(f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config {config} {arguments}")


def _local_acl_command() -> list[str]:
    """`kafka-acls.sh` without a Kafka distribution: its class from kafka_local.py's jar cache."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import kafka_local

    cfg = kafka_local.Config.from_env()
    kafka_local.ensure_jars(cfg)
    log4j = cfg.cache_dir / "tools-log4j.properties"
    if not log4j.exists():
        log4j.write_text(TOOLS_LOG4J)
    return [
        "java",
        "-Xmx256m",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        str(cfg.libs_dir / "*"),
        "kafka.admin.AclCommand",
    ]


def apply(args: argparse.Namespace) -> int:
    if not (args.bootstrap_server and args.command_config):
        print("error: apply needs --bootstrap-server and --command-config", file=sys.stderr)
        return 2
    tool = [args.kafka_acls] if args.kafka_acls else _local_acl_command()
    for grant in grants(args):
        result = subprocess.run([*tool, *_connection(args), *grant.arguments()], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"error: kafka-acls failed ({result.returncode}):\n{result.stdout}{result.stderr}", file=sys.stderr)
            return 1
        print(f"added: {' '.join(grant.arguments()[1:])}")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = main.add_subparsers(dest="command", required=True)
    for name, help_text in (("commands", "print the kafka-acls.sh commands"), ("apply", "run them")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--bootstrap-server", help="(printed as $BOOTSTRAP when not given)")
        command.add_argument("--command-config", help="an admin's client properties ($ADMIN_CONFIG)")
        command.add_argument("--kafka-acls", help="path of kafka-acls.sh (apply; default: the cached jars)")
        command.add_argument("--app-id", default=os.environ.get("KAFKA_APP_ID") or "token-refresh")
        for default_name in TOPIC_DEFAULTS:
            flag = "--topic-" + default_name.replace(".", "-").replace("_", "-")
            command.add_argument(flag, dest=_dest(default_name), default=_env_topic(default_name))
        command.add_argument(
            "--notify-dlq-topic", default=os.environ.get("NOTIFY_DLQ_TOPIC") or "notify.dlq", help="(--notify's)"
        )
        command.add_argument("--worker", action="append", default=[], metavar="PRINCIPAL")
        command.add_argument("--producer", action="append", default=[], metavar="PRINCIPAL")
        command.add_argument("--trigger", action="append", default=[], metavar="PRINCIPAL")
        command.add_argument(
            "--notify", action="append", default=[], metavar="PRINCIPAL", help="`token-refresh notify`"
        )
        command.add_argument(
            "--notifier", action="append", default=[], metavar="PRINCIPAL", help="an outside team's consumer"
        )
        command.add_argument("--notifier-group", action="append", default=[], metavar="GROUP")
        command.add_argument("--operator", action="append", default=[], metavar="PRINCIPAL")
        command.add_argument(
            "--topics-precreated",
            action="store_true",
            help="an admin creates the topics (and <app>-__assignor-__leader): no Create for the worker or notify",
        )
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.notifier and not args.notifier_group:
        print("error: --notifier needs at least one --notifier-group", file=sys.stderr)
        return 2
    if not (args.worker or args.producer or args.trigger or args.notify or args.notifier or args.operator):
        print(
            "error: name a principal (--worker, --producer, --trigger, --notify, --notifier, --operator)",
            file=sys.stderr,
        )
        return 2
    if args.command == "commands":
        print_commands(args)
        return 0
    return apply(args)


if __name__ == "__main__":
    sys.exit(main())
