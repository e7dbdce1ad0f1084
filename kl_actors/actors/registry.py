"""The single registry of actor kinds: kind -> "module:Class", loaded by dotted name so that no
actor module ever imports another (`run.py` starts one; the supervisor only needs the names).
A pooled actor's name is kind-N (`downloader-2`)."""

from __future__ import annotations

import importlib

KINDS = {
    "broker": "kl_actors.actors.broker:Broker",
    "writer": "kl_actors.actors.writer:Writer",
    "scheduler": "kl_actors.actors.scheduler:Scheduler",
    "downloader": "kl_actors.actors.downloader:Downloader",
    "websocket": "kl_actors.actors.websocket:WebSocketActor",
    "timesync": "kl_actors.actors.timesync:TimeSync",
    "api": "kl_actors.actors.api:ApiActor",
}


def kind_of(name: str) -> str | None:
    """The kind of an actor name, or None if there is no such kind."""
    head, _, tail = name.rpartition("-")
    kind = head if head and tail.isdigit() else name
    return kind if kind in KINDS else None


def actor_class(kind: str) -> type:
    module_name, _, class_name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module_name), class_name)
