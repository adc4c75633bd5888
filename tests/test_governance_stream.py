"""Governance of a streaming pipeline against a real Kafka-compatible broker: drift is
judged per window of records (the window's PSI in the metrics, the breach counted, the
configured action taken through the kill switch), and no result or dead letter carries
a card number in clear."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.cli import main
from gateway.config import GatewayConfig
from gateway.metrics import REGISTRY
from gateway.realtime.serve import run_until
from gateway.state import StateStore
from schemas.contract import load_contract
from schemas.examples import contract_path, generate_card_file
from tests.kafka_broker import TansuBroker
from tests.realtime_data import RECORD
from tests.test_realtime_kafka import Topics, config_dict, keyed, produce, readers  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


def details(path: Path) -> list[bytes]:
    """The detail records of a generated card file, one message each."""
    rows = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, RECORD)[1:-1]
    return [bytes(r) for r in rows]


def pan_of(record: bytes) -> str:
    contract = load_contract(contract_path())
    pan = next(node for node, rules in contract.rules.values() if rules.pii)
    return record[pan.offset: pan.offset + pan.size].decode("cp037")


async def test_a_drifting_stream_breaches_in_its_window_and_the_kill_switch_forces_fallback(
        kafka_broker: TansuBroker, tmp_path: Path, readers: Any) -> None:  # noqa: F811
    reference = tmp_path / "REFERENCE.DAT"
    generate_card_file(reference, records=10_000, seed=1)
    profile = tmp_path / "reference.profile.json"
    built = await asyncio.to_thread(main, ["profile", "build", "--contract", str(contract_path()), "--input",
                                           str(reference), "--output", str(profile)])
    assert built == 0
    shifted = tmp_path / "SHIFTED.DAT"
    generate_card_file(shifted, records=1_500, seed=2, drift=0.6)
    messages = details(shifted)

    bootstrap = kafka_broker.bootstrap
    t = Topics.create(kafka_broker, "drift")
    results = await readers(bootstrap, t.results)
    doc = config_dict(tmp_path, bootstrap, {"cards": t.source(payload="copybook")})
    doc["pipelines"]["cards"]["drift"] = {"reference": str(profile), "window_records": 500,
                                          "action": "force_fallback"}
    cfg = GatewayConfig.model_validate({**doc, "base_dir": tmp_path})
    store = StateStore(cfg.state.url)  # as `lgw serve` has it: the kill switch lives there
    stop = asyncio.Event()
    gateway = asyncio.create_task(run_until(cfg, stop, state=store))
    try:
        sent = await produce(bootstrap, t.input, keyed(messages, "card"))
        await results.wait_for([s.id for s in sent])
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 45)

    breaches = REGISTRY.get_sample_value("lgw_drift_breaches_total", {"pipeline": "cards", "signal": "psi"})
    assert breaches is not None and breaches >= 1
    amount = REGISTRY.get_sample_value("lgw_drift_psi", {"pipeline": "cards", "column": "feature.amount"})
    mcc = REGISTRY.get_sample_value("lgw_drift_psi", {"pipeline": "cards", "column": "feature.mcc"})
    assert amount is not None and amount > 0.25 and mcc is not None and mcc < 0.1
    with store:
        switch = store.get_kill_switch("cards")
    assert switch.mode == "force_fallback" and switch.set_by == "lgw:drift-monitor"
    assert "psi:amount" in switch.reason

    # the scored records left masked: no card number in clear in any result
    pans = {pan_of(m) for m in messages}
    assert len(pans) > 100
    bodies = [r.value.decode("cp037") for r in results.records]
    assert not any(p in body for body in bodies for p in pans)
    assert all(b[13:29][6:12] == "******" for b in bodies[:50])
