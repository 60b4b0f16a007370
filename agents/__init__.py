"""Thin Faust agents and timers: decode, call the engine, route the outcome."""

from __future__ import annotations

import faust

from agents import connections, outbox, refresh, scheduler
from agents.context import WorkerContext
from stream_app.service import TokenService


def register(app: faust.App, service: TokenService) -> WorkerContext:
    context = WorkerContext(app, service)
    for module in (connections, refresh, scheduler, outbox):
        module.attach(context)
    return context
