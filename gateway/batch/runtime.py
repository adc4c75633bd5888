"""What every run of one pipeline shares, built once from the config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import registry
from adapters.base import RejectSink, Sink
from adapters.files.dropfolder import MARKER_SUFFIX, DropFolder, Folders, HashAhead
from adapters.registry import BuildContext
from gateway.assembly import build_pipeline
from gateway.config import DropFolderConfig, FileSinkConfig, GatewayConfig, PipelineConfig
from gateway.contract_scoring import load_scoring_contract
from gateway.drivers.batch import written_to
from gateway.governance.profile import Profile
from gateway.governance.run import DecisionLog, RunGovernance
from gateway.governance.wiring import build_governance, open_decision_log, reference_of
from gateway.pipeline import Pipeline, fixed_columns
from gateway.runs import RunStore
from gateway.state import StateStore
from schemas.contract import Contract
from schemas.errors import ConfigError


@dataclass
class BatchRuntime:
    """What every run of one pipeline shares, built once from the config."""

    name: str
    config: PipelineConfig
    source: DropFolderConfig
    contract: Contract
    pipeline: Pipeline
    folders: Folders
    dropfolder: DropFolder
    runs: RunStore
    gateway: GatewayConfig
    state: StateStore
    reference: Profile | None = None  # drift.reference, loaded once
    audit: DecisionLog | None = None  # the audit trail's decision records (gateway.governance.audit)
    hashes: HashAhead = field(default_factory=HashAhead)  # the inbox's files, hashed ahead of their claims

    def governance(self, run_id: str, input_name: str, output_stem: str) -> RunGovernance:
        """The governance of one run: audit, review, drift and quality against the reference."""
        return build_governance(self.pipeline, self.config, self.gateway, self.state, run=run_id,
                                source=input_name, review_run=output_stem, audit=self.audit,
                                reference=self.reference)

    def _context(self, run_name: str) -> BuildContext:
        return BuildContext(pipeline=self.name, contract=self.contract, base_dir=self.gateway.base_dir,
                            source=self.source, batch_size=self.batch_size, kafka=self.gateway.kafka,
                            amqp=self.gateway.amqp, state=self.state, run_name=run_name,
                            extras={"fixed_columns": fixed_columns(self.pipeline)})

    def build_sink(self, run_name: str) -> Sink:
        """Where a run's scored records go (`sink`, by default a file in the outbox)."""
        cfg = self.config.output
        sink: Sink = registry.component("sink", cfg.type).build(cfg, self._context(run_name))
        return sink

    def build_rejects(self, run_name: str) -> RejectSink:
        """Where a run's rejects go (`rejects`, by default a file in the outbox)."""
        cfg = self.config.rejects_to
        rejects: RejectSink = registry.component("rejects", cfg.type).build(cfg, self._context(run_name))
        return rejects

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def marker(self, input_name: str) -> str | None:
        return f"{input_name}{MARKER_SUFFIX}" if self.source.done_file else None

    def output_location(self, scored: dict[str, Any]) -> str:
        """Where a run's scored records went, as its summary says: a file's path, or the
        sink's type and target (`kafka:TOPIC`, `odbc:TABLE`)."""
        out = self.config.output
        if isinstance(out, FileSinkConfig):
            folder = self.folders.outbox if out.folder == self.source.outbox else self.gateway.resolve(out.folder)
            return str(folder / scored["name"])
        return written_to(scored)

    def manifest_path(self, stem: str) -> Path:
        return self.folders.path("outbox", f"{stem}.manifest.json")

    async def close(self) -> None:
        self.hashes.close()
        if self.pipeline.model is not None:
            await self.pipeline.model.close()
        close = getattr(self.audit, "close", None)
        if close is not None:
            close()


def build_runtime(name: str, cfg: GatewayConfig, state: StateStore, runs: RunStore | None = None) -> BatchRuntime:
    pipe = cfg.pipelines.get(name)
    if pipe is None:
        raise ConfigError(f"no pipeline {name!r} in the config (pipelines: {', '.join(cfg.pipelines) or 'none'})")
    if not isinstance(pipe.source, DropFolderConfig):
        raise ConfigError(f"pipeline {name} has no drop-folder `source`: nothing for the file driver to read")
    folders = Folders.prepare(pipe.source.folders(cfg.base_dir))
    dropfolder = DropFolder(folders, glob=pipe.source.glob, stable_for_s=pipe.source.stable_for_s,
                            done_file=pipe.source.done_file)
    hashes = HashAhead.begun(folders.inbox)  # gateway.inbox_early may have begun while the process started
    hashes.start(arrival.path for arrival in dropfolder.scan()[0])  # while the contract, model and audit log load
    try:
        contract = load_scoring_contract(cfg.resolve(pipe.contract))
        pipeline = build_pipeline(name, contract, cfg, model_name=pipe.model, policy=pipe.policy,
                                  shadow=pipe.shadow, state=state, pii=pipe.pii, review=pipe.review)
        return BatchRuntime(name, pipe, pipe.source, contract, pipeline, folders, dropfolder,
                            runs or RunStore(state), cfg, state, reference_of(pipe, cfg),
                            open_decision_log(cfg, state), hashes)
    except BaseException:
        hashes.close()
        raise
