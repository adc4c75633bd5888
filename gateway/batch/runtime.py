"""What every run of one pipeline shares, built once from the config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters.files.dropfolder import MARKER_SUFFIX, DropFolder, Folders
from adapters.files.outbox import EXTENSIONS
from gateway.assembly import build_pipeline
from gateway.config import DropFolderConfig, GatewayConfig, PipelineConfig, Policy
from gateway.contract_scoring import load_scoring_contract
from gateway.pipeline import Pipeline
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

    @property
    def fmt(self) -> str:
        return self.source.format

    @property
    def chunk_records(self) -> int:
        return self.config.batch_size

    def marker(self, input_name: str) -> str | None:
        return f"{input_name}{MARKER_SUFFIX}" if self.source.done_file else None

    def output_names(self, stem: str) -> dict[str, Path]:
        return {"scored": self.folders.path("outbox", f"{stem}.scored.{EXTENSIONS[self.fmt]}"),
                "rejects": self.folders.path("outbox", f"{stem}.rejects.jsonl"),
                "manifest": self.folders.path("outbox", f"{stem}.manifest.json")}

    async def close(self) -> None:
        if self.pipeline.model is not None:
            await self.pipeline.model.close()


def build_runtime(name: str, cfg: GatewayConfig, state: StateStore, runs: RunStore | None = None) -> BatchRuntime:
    pipe = cfg.pipelines.get(name)
    if pipe is None:
        raise ConfigError(f"no pipeline {name!r} in the config (pipelines: {', '.join(cfg.pipelines) or 'none'})")
    if not isinstance(pipe.source, DropFolderConfig):
        raise ConfigError(f"pipeline {name} has no drop-folder `source`: nothing for the file driver to read")
    if pipe.policy == Policy.FALLBACK_AND_RESCORE:
        raise ConfigError(f"pipeline {name}: policy fallback_and_rescore is not supported in batch mode "
                          "(use fallback or pause)")
    contract = load_scoring_contract(cfg.resolve(pipe.contract))
    pipeline = build_pipeline(name, contract, cfg, model_name=pipe.model, policy=pipe.policy, shadow=pipe.shadow,
                              state=state)
    folders = Folders.prepare(pipe.source.folders(cfg.base_dir))
    dropfolder = DropFolder(folders, glob=pipe.source.glob, stable_for_s=pipe.source.stable_for_s,
                            done_file=pipe.source.done_file)
    return BatchRuntime(name, pipe, pipe.source, contract, pipeline, folders, dropfolder, runs or RunStore(state))
