"""The real-time gateway of one checkout against the raw aiokafka loop, 5 rounds, medians:
run it for two checkouts, alternately, to compare them (bench/realtime.py runs one).

    git worktree add --detach /tmp/before <rev>
    python bench/compare_checkouts.py /tmp/before plain
    python bench/compare_checkouts.py . traced      # metrics and tracing on, exporter none
    python bench/compare_checkouts.py . plain

Each run starts its own Tansu broker on a free loopback port; the ratio to the raw loop
of the same run is what compares across runs (the machine's speed moves between them).
Beside each rate: this process's CPU seconds per million messages over the run (every
thread; the broker is a process of its own and not counted), comparable on a busy machine.
"""

import asyncio
import statistics
import sys
import tempfile
import time
import uuid

tree, mode = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)
sys.path.insert(0, tree + "/bench")

import realtime as b  # noqa: E402  (the checkout's own bench)

from tests.kafka_broker import TansuBroker, free_port  # noqa: E402


async def main() -> None:
    port = free_port()
    broker = TansuBroker(listener_port=port, advertised_port=port).start()
    try:
        bs = broker.bootstrap
        n = 200_000
        msgs = b.card_messages(n + 2, "json")[:n]
        tag = uuid.uuid4().hex[:6]
        names = {k: f"p-{k}-{tag}" for k in ("raw-in", "raw-out", "gw-in", "gw-out", "gw-out-dlq")}
        await b.create_topics(bs, list(names.values()), 3)
        await b.produce(bs, names["gw-in"], msgs)
        await b.produce(bs, names["raw-in"], msgs)
        url = f"sqlite:///{tempfile.mkdtemp()}/state.db"
        gw, raw, gw_cpu, raw_cpu = [], [], [], []
        for _ in range(5):
            cpu = time.process_time()
            raw.append(n / await b.raw_loop(bs, names["raw-in"], names["raw-out"], n))
            raw_cpu.append((time.process_time() - cpu) * 1e6 / n)
            cfg = b.gateway_config(bs, names["gw-in"], names["gw-out"], "json", url)
            run = b.traced_gateway_run if mode == "traced" else b.gateway_run
            cpu = time.process_time()
            gw.append(n / await run(cfg, n))
            gw_cpu.append((time.process_time() - cpu) * 1e6 / n)
        g, r = statistics.median(gw), statistics.median(raw)
        print(f"{tree} {mode}: gateway {g:,.0f} msg/s ({statistics.median(gw_cpu):.2f} CPU s/M), "
              f"raw {r:,.0f} msg/s ({statistics.median(raw_cpu):.2f} CPU s/M), ratio {g / r:.3f}; "
              f"rounds gateway {[round(x) for x in gw]} raw {[round(x) for x in raw]}")
    finally:
        broker.stop()
if __name__ == "__main__":
    asyncio.run(main())
