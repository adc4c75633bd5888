"""The long fuzz run: the fuzz suite's targets with random seeds for minutes or a number
of examples, every finding recorded instead of stopping at the first.

    python bench/fuzz.py --minutes 10            (the time split evenly over the targets)
    python bench/fuzz.py --examples 2000 [--targets decode,expression-typed] [--seed 42]

The inputs come from the same strategies as tests/test_fuzz_*.py and run in the same
worker process (tests/fuzz_worker.py: address space capped at its baseline + 1 GiB, 5 s
per input, at most 256 MB of peak RSS per input). Prints per target: examples run, how
they ended, the distinct findings (known from issue 10 / already listed in
KNOWN_DEFECTS / new) and the worker's peak RSS; then every distinct finding with the
smallest input that showed it. Exit status 1 when a finding is not in KNOWN_DEFECTS.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests import fuzz_inputs as inputs
from tests.fuzz_harness import FuzzWorker, Outcome, known_defect

# name -> (worker target, strategy of that target's input)
TARGETS: dict[str, tuple[str, st.SearchStrategy[dict[str, Any]]]] = {
    "copybook-grammar": ("copybook", inputs.copybook_texts().map(lambda text: {"text": text})),
    "copybook-mutated": ("copybook", inputs.mutated_copybooks().map(lambda text: {"text": text})),
    "decode": ("decode", inputs.decode_inputs()),
    "contract": ("contract", inputs.contract_inputs()),
    "config": ("config", inputs.config_inputs()),
    "expression-typed": ("expression", inputs.typed_expressions.map(lambda text: {"text": text})),
    "expression-any": ("expression", inputs.expression_inputs()),
}
ROUND_EXAMPLES = 50  # examples per Hypothesis run; each run gets a new seed


@dataclass
class Finding:
    outcome: Outcome
    smallest: dict[str, Any]
    count: int = 0
    known: str = ""  # a KNOWN_DEFECTS id, "" when new


@dataclass
class TargetRun:
    name: str
    examples: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    findings: dict[str, Finding] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    restarts: int = 0

    def record(self, target: str, inp: dict[str, Any], outcome: Outcome) -> None:
        self.examples += 1
        self.statuses[outcome.status] += 1
        if not outcome.is_bug:
            return
        found = self.findings.get(outcome.signature)
        if found is None:
            defect = known_defect(target, outcome)
            found = self.findings[outcome.signature] = Finding(outcome, inp, known=defect.id if defect else "")
        found.count += 1
        if len(json.dumps(inp)) < len(json.dumps(found.smallest)):
            found.smallest, found.outcome = inp, outcome


def run_round(worker: FuzzWorker, run: TargetRun, examples: int, round_seed: int) -> None:
    target, strategy = TARGETS[run.name]

    @seed(round_seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate], print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(inp=strategy)
    def fuzz(inp: dict[str, Any]) -> None:
        run.record(target, inp, worker.run(target, inp))

    fuzz()


def fuzz_target(name: str, *, examples: int | None, seconds: float | None, rng: random.Random) -> TargetRun:
    run = TargetRun(name)
    worker = FuzzWorker()
    worker.start()
    started = time.monotonic()
    try:
        while True:
            left = None if examples is None else examples - run.examples
            if left is not None and left <= 0:
                break
            if seconds is not None and time.monotonic() - started >= seconds:
                break
            run_round(worker, run, min(ROUND_EXAMPLES, left or ROUND_EXAMPLES), rng.randrange(2**32))
    finally:
        run.seconds = time.monotonic() - started
        run.peak_rss_mb = worker.peak_rss_mb
        run.restarts = worker.restarts
        worker.stop()
    return run


def report(runs: list[TargetRun]) -> bool:
    """Prints the tables; True when a finding is not in KNOWN_DEFECTS."""
    print(f"{'target':<18} {'examples':>8} {'ok':>6} {'refused':>7} {'bugs':>5} {'distinct':>8} {'new':>4} "
          f"{'peak RSS MB':>11} {'restarts':>8} {'seconds':>8}")
    for r in runs:
        new = sum(1 for f in r.findings.values() if not f.known)
        print(f"{r.name:<18} {r.examples:>8} {r.statuses['ok']:>6} {r.statuses['user_error']:>7} "
              f"{r.statuses['bug']:>5} {len(r.findings):>8} {new:>4} {r.peak_rss_mb:>11.0f} {r.restarts:>8} "
              f"{r.seconds:>8.0f}")
    any_new = False
    for r in runs:
        for sig, f in sorted(r.findings.items(), key=lambda kv: (bool(kv[1].known), kv[0])):
            any_new |= not f.known
            print(f"\n[{r.name}] {'NEW' if not f.known else 'known: ' + f.known} x{f.count}: {sig}")
            print(f"  {f.outcome.message[:300]}")
            print(f"  smallest input: {json.dumps(f.smallest, ensure_ascii=False)[:600]}")
    return any_new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="total time, split evenly over the targets (default 10)")
    budget.add_argument("--examples", type=int, help="examples per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of: {', '.join(TARGETS)}")
    parser.add_argument("--seed", type=int, help="seed of the run's seeds (default: random, printed)")
    parser.add_argument("--report", metavar="FILE", help="also write the findings as JSON here")
    args = parser.parse_args()
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}: expected some of {', '.join(TARGETS)}")
    master = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(master)
    minutes = args.minutes if args.minutes is not None or args.examples is not None else 10.0
    seconds = None if minutes is None else minutes * 60 / len(names)
    print(f"fuzz: seed {master}; " + (f"{args.examples} examples per target" if args.examples
                                      else f"{seconds:.0f} s per target"), flush=True)
    runs = []
    for name in names:
        runs.append(fuzz_target(name, examples=args.examples, seconds=seconds, rng=rng))
        r = runs[-1]
        print(f"  {name}: {r.examples} examples, {len(r.findings)} distinct findings, {r.seconds:.0f} s", flush=True)
    print()
    any_new = report(runs)
    if args.report:
        Path(args.report).write_text(json.dumps({"seed": master, "targets": [
            {"target": r.name, "examples": r.examples, "statuses": dict(r.statuses), "peak_rss_mb": r.peak_rss_mb,
             "findings": [{"signature": s, "known": f.known, "count": f.count, "message": f.outcome.message,
                           "smallest_input": f.smallest} for s, f in r.findings.items()]} for r in runs]},
            indent=2, ensure_ascii=False))
    return 1 if any_new else 0


if __name__ == "__main__":
    sys.exit(main())
