"""Scoring pipeline throughput against its bare parts, measured in the same run.

    python bench/score.py [--records 1000000]

1. ONNX: the whole pipeline (decode + validate + features + guarded ONNX call +
   output checks + provenance) vs the bare parts (column decode of the same file + one
   bare onnxruntime call on a prepared feature matrix). Target: pipeline <= 2x bare.
2. Fallback (model forced off): the pipeline vs bare rule evaluation on the decoded
   table. Target: >= 500,000 records/s.
Best of `--repeat` runs each; wall-clock seconds from time.perf_counter, and the CPU
seconds per million records of that run (bench/clock.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.models.onnx import OnnxModel
from bench.clock import Took, best_of
from gateway.assembly import build_pipeline
from gateway.config import embedded_defaults
from gateway.fallback import FallbackRules
from gateway.features import FeatureMap
from schemas.contract import load_contract
from schemas.examples import contract_path, generate_card_file, model_info
from schemas.records import read_records


def best(fn: Callable[[], object], repeat: int) -> Took:
    return best_of(repeat, fn)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    n = args.records
    contract = load_contract(contract_path())
    info = model_info("fraud")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "CARDTXN.DAT"
        generate_card_file(path, records=n, seed=3)
        tables = [dc.table for dc in contract.decode_file(path)]
        table = pa.concat_tables(tables)
        features = FeatureMap.from_contract(contract).matrix(table)
        onnx = OnnxModel(info["path"], sha256=info["sha256"], name="fraud")
        rules = FallbackRules.from_contract(contract)
        decoder = contract.spec.decoder()

        def bare_decode() -> None:
            for chunk in read_records(path, contract.spec.framing):
                decoder.decode(chunk.matrix, chunk.lengths)

        def bare_model() -> None:
            onnx.predict_sync(features)

        def bare_rules() -> None:
            rules.score(table)

        def pipeline(force_fallback: bool) -> Callable[[], None]:
            def run() -> None:
                async def go() -> None:
                    pipe = build_pipeline("card_txn", contract, embedded_defaults(), model_name="fraud",
                                          force_fallback=force_fallback)
                    for dc in contract.decode_file(path):
                        await pipe.score(dc.table)
                    if pipe.model is not None:
                        await pipe.model.close()
                asyncio.run(go())
            return run

        def score_only(force_fallback: bool) -> Callable[[], None]:
            def run() -> None:
                async def go() -> None:
                    pipe = build_pipeline("card_txn", contract, embedded_defaults(), model_name="fraud",
                                          force_fallback=force_fallback)
                    for t in tables:
                        await pipe.score(t)
                asyncio.run(go())
            return run

        t_decode = best(bare_decode, args.repeat)
        t_model = best(bare_model, args.repeat)
        t_pipe = best(pipeline(False), args.repeat)
        t_rules = best(bare_rules, args.repeat)
        t_fb_pipe = best(pipeline(True), args.repeat)
        t_fb_score = best(score_only(True), args.repeat)

    def rate(t: Took) -> str:
        return f"{n / t.wall:>12,.0f} records/s  ({t.wall:6.3f} s, {t.per_million(n):5.2f} CPU s/M)"

    print(f"records: {n:,} (card_txn, 120-byte EBCDIC records, 50,000 per chunk)")
    print(f"bare decode (column-wise)              {rate(t_decode)}")
    print(f"bare ONNX call (one batch)             {rate(t_model)}")
    both = Took(t_decode.wall + t_model.wall, t_decode.cpu + t_model.cpu)
    print(f"bare decode + bare ONNX                {rate(both)}")
    print(f"pipeline, ONNX (decode..provenance)    {rate(t_pipe)}")
    ratio = t_pipe.wall / both.wall
    verdict = "met" if ratio <= 2 else "NOT met"
    print(f"pipeline / (bare decode + bare model)  {ratio:.2f}x  (target <= 2.0x: {verdict})")
    print(f"bare rule evaluation                   {rate(t_rules)}")
    print(f"pipeline, fallback only, scoring       {rate(t_fb_score)}")
    print(f"pipeline, fallback only, with decode   {rate(t_fb_pipe)}")
    ok = n / t_fb_pipe.wall >= 500_000
    print(f"fallback pipeline >= 500,000 records/s: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
