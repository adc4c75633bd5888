"""What `gateway.realtime.app.patch_batch_fetch` assumes about the installed FastStream.

The gateway replaces the private `get_msg` of FastStream's Kafka batch subscriber (it
sleeps batch_timeout_ms after an empty poll, adding that much latency to the first record
after a quiet spell, and FastStream offers no public hook for it). An upgrade that
renames, reshapes or stops calling that method would silently bring the sleep back or
break the consume loop; these tests make it fail at the first test run instead."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import BatchSubscriber, LogicSubscriber
from packaging.requirements import Requirement
from packaging.version import Version

from gateway.realtime.app import fetch_batch, patch_batch_fetch

ROOT = Path(__file__).resolve().parents[1]


def faststream_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = [*project.get("dependencies", []), *(d for group in project["optional-dependencies"].values()
                                                 for d in group)]
    return [r for r in map(Requirement, lines) if r.name == "faststream"]


def test_the_installed_faststream_is_in_the_pinned_range() -> None:
    installed = Version(importlib.metadata.version("faststream"))
    requirements = faststream_requirements()
    assert requirements, "pyproject.toml no longer names faststream"
    for req in requirements:
        # An upper bound keeps a resolver from installing a FastStream nobody checked the patch on.
        assert any(s.operator == "<" for s in req.specifier), f"{req}: no upper bound"
        assert installed in req.specifier, f"faststream {installed} is outside {req}"


def test_the_batch_subscriber_still_polls_through_an_async_get_msg_of_a_consumer() -> None:
    original = BatchSubscriber.__dict__.get("get_msg")
    assert original is not None, "FastStream's BatchSubscriber no longer defines get_msg"
    assert inspect.iscoroutinefunction(original)
    assert list(inspect.signature(original).parameters) == ["self", "consumer"]
    assert list(inspect.signature(fetch_batch).parameters) == ["self", "consumer"]


def test_the_consume_loop_calls_get_msg_on_the_instance() -> None:
    # The patch sets an instance attribute: it only takes effect if the loop looks the
    # method up on `self` for every poll.
    source = inspect.getsource(LogicSubscriber._run_consume_loop)
    assert re.search(r"await self\.get_msg\(consumer\)", source), source


def test_the_replacement_asks_getmany_for_what_the_subscriber_was_configured_with() -> None:
    params = inspect.signature(AIOKafkaConsumer.getmany).parameters
    assert {"timeout_ms", "max_records"} <= set(params)
    assert params["timeout_ms"].kind is inspect.Parameter.KEYWORD_ONLY
    source = inspect.getsource(fetch_batch)
    assert "timeout_ms=self.batch_timeout_ms" in source and "max_records=self.max_records" in source


def test_a_subscriber_built_as_the_app_builds_it_takes_the_patch() -> None:
    broker = KafkaBroker("127.0.0.1:9")  # never connected: building a subscriber needs no broker
    sub = broker.subscriber("lgw-patch-check", batch=True, group_id="g", max_records=17, batch_timeout_ms=23)
    assert isinstance(sub, BatchSubscriber)
    assert (sub.batch_timeout_ms, sub.max_records) == (23, 17)
    patch_batch_fetch(sub)
    assert sub.get_msg.__func__ is fetch_batch and sub.get_msg.__self__ is sub
