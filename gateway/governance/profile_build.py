"""`lgw profile build`: the reference profile a pipeline's runs are compared with.

The reference input (a file the model was validated on, or a good night's file) is read
with its contract, scored with the pipeline's model (the rules when it has none), and
profiled: every input field (`field.NAME`), every model feature (`feature.NAME`), every
model output (`score.NAME`), and the decision rate (outputs at or above the output's
threshold) per value of every field with few categories, for the shift by segment.

Memory stays flat: at most `max_records` records are kept for the quantiles; a larger
input contributes an evenly spread sample of each batch (deciles of a million records
are as good as of a hundred million).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.files.source import FileSource
from gateway.governance.profile import MAX_CATEGORIES, Profile, build_profile
from gateway.pipeline import Pipeline
from schemas.arrow_buffers import one_array
from schemas.errors import ConfigError
from schemas.records import DEFAULT_BATCH_SIZE
from schemas.safefiles import create_output, open_existing

DEFAULT_MAX_RECORDS = 1_000_000
MAX_PROFILE_BYTES = 16 << 20  # a profile is a few kB; anything near this is not one


def profiled_columns(pipeline: Pipeline, inputs: pa.Table, scored: pa.Table) -> pa.Table:
    """The columns a profile holds, named by what they are (field./feature./score.)."""
    columns: dict[str, Any] = {}
    for name in inputs.column_names:
        if name != "source_record":
            columns[f"field.{name}"] = inputs.column(name)
    if scored.num_rows:
        kept = inputs.take(pa.array(np.asarray(scored_rows(inputs, scored), dtype=np.int64)))
        matrix = pipeline.features.matrix(kept)
        for i, name in enumerate(pipeline.features.names):
            columns[f"feature.{name}"] = pa.array(matrix[:, i])
    for name in pipeline.outputs:
        if name in scored.column_names:
            columns[f"score.{name}"] = scored.column(name)
    n = max((len(c) for c in columns.values()), default=0)
    # inputs and scored records differ in length when records were refused: pad to one table
    return pa.table({k: _padded(v, n) for k, v in columns.items()})


def scored_rows(inputs: pa.Table, scored: pa.Table) -> np.ndarray:
    """The input row of every scored record (by `source_record`, which both carry)."""
    if "source_record" not in scored.column_names or "source_record" not in inputs.column_names:
        return np.arange(scored.num_rows)
    numbers = np.asarray(inputs.column("source_record"))
    wanted = np.asarray(scored.column("source_record"))
    order = np.argsort(numbers, kind="stable")
    return order[np.searchsorted(numbers, wanted, sorter=order)]


def _padded(column: Any, n: int) -> Any:
    if len(column) == n:
        return column
    array = one_array(column)
    return pa.concat_arrays([array, pa.nulls(n - len(array), array.type)])


async def build_reference(pipeline: Pipeline, path: Path, *, max_records: int = DEFAULT_MAX_RECORDS,
                          batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0) -> Profile:
    """Reads, scores and profiles `path` (see the module's docstring)."""
    contract = pipeline.contract
    source = FileSource(contract, path, batch_size=batch_size)
    record_bytes = contract.spec.framing.record_length or 1  # variable-length files: a guess on the safe side
    expected = max(1, path.stat().st_size // record_bytes)
    keep_share = min(1.0, max_records / expected)
    rng = np.random.default_rng(seed)
    parts: list[pa.Table] = []
    kept = 0
    segments: dict[str, dict[str, list[float]]] = {}
    first = next(iter(pipeline.outputs.values()), None)
    threshold = first.threshold if first is not None and first.type in ("float", "int") else None
    await source.connect()
    try:
        while (batch := await source.read_batch()) is not None:
            inputs = batch.table.append_column(
                "source_record", pa.array(np.asarray(batch.record_numbers if batch.record_numbers is not None
                                                     else np.arange(1, batch.table.num_rows + 1), dtype=np.int64)))
            scored = (await pipeline.score(inputs)).table
            if threshold is not None and first is not None:
                _decisions(segments, pipeline, scored, first.name, threshold)
            table = profiled_columns(pipeline, inputs, scored)
            if keep_share < 1.0 and table.num_rows:
                take = rng.random(table.num_rows) < keep_share
                table = table.filter(pa.array(take))
            if kept < max_records and table.num_rows:
                table = table.slice(0, max_records - kept)
                parts.append(table)
                kept += table.num_rows
    finally:
        await source.close()
    if not parts:
        raise ConfigError(f"profile build: {path} holds no record that decodes with contract {contract.name}")
    table = pa.concat_tables(parts, promote_options="permissive")
    pii = {f"field.{n.key}" for n, r in contract.rules.values() if r.pii}
    profile = build_profile(table, pii=pii)
    rates = {name: {value: s[1] / s[0] for value, s in by.items() if s[0]}
             for name, by in segments.items() if by and _TOO_VARIED not in by}
    return profile.model_copy(update={
        "records": source.report.details if source.report.details else kept,
        "contract": {"name": contract.name, "version": contract.version},
        "source": {"name": path.name, "sha256": _sha256(path)},
        "decision_threshold": threshold, "segments": rates or None})


def _decisions(into: dict[str, dict[str, list[float]]], pipeline: Pipeline, scored: pa.Table, output: str,
               threshold: float) -> None:
    """Counts [records, positive decisions] per value of every input field with few
    categories; a field found to have more is dropped (`into[name]` becomes empty and stays)."""
    if scored.num_rows == 0 or output not in scored.column_names:
        return
    positive = np.asarray(pc.fill_null(pc.greater_equal(scored.column(output), threshold), False), dtype=np.float64)
    pii = {n.key for n, r in pipeline.contract.rules.values() if r.pii}
    for name in scored.column_names:
        column = scored.column(name)
        if name in pii or name in pipeline.outputs or name in _NOT_SEGMENTS or not (
                pa.types.is_string(column.type) or pa.types.is_integer(column.type)):
            continue
        by = into.setdefault(name, {})
        if by.get(_TOO_VARIED):
            continue
        encoded = pc.dictionary_encode(one_array(pc.cast(column, pa.string())).fill_null("(null)"))
        labels = encoded.dictionary.to_pylist()
        if len(set(labels) | set(by)) > MAX_CATEGORIES:
            by.clear()
            by[_TOO_VARIED] = [1, 0]
            continue
        codes = np.asarray(encoded.indices, dtype=np.int64)
        n = np.bincount(codes, minlength=len(labels))
        p = np.bincount(codes, weights=positive, minlength=len(labels))
        for i, label in enumerate(labels):
            s = by.setdefault(label, [0, 0.0])
            s[0] += int(n[i])
            s[1] += float(p[i])


_TOO_VARIED = "\x00too varied"
_NOT_SEGMENTS = frozenset({"source_record", "scored_by", "model_name", "model_version", "contract",
                           "contract_version", "rule_id", "reason", "review"})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_existing(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_profile(profile: Profile, path: Path) -> None:
    """Written whole or not at all, never through a planted link."""
    out = create_output(path, "--output")
    try:
        out.write((json.dumps(profile.model_dump(mode="json"), indent=1) + "\n").encode())
        out.publish()
    except BaseException:
        out.discard()
        raise


def load_profile(path: Path) -> Profile:
    """A stored profile; a wrong file is one error line naming what was expected."""
    try:
        with open_existing(path) as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"drift.reference: profile {path} not found (make it with `lgw profile build`)") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ConfigError(f"drift.reference: {path} is larger than {MAX_PROFILE_BYTES >> 20} MiB: not a profile")
    try:
        return Profile.model_validate_json(data)
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"drift.reference: {path} is not a profile `lgw profile build` wrote ({first})") from None


__all__ = ["build_reference", "load_profile", "profiled_columns", "save_profile"]
