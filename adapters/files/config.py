"""Config of the file components: the drop-folder source, the file sink, the rejects file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from adapters.config import ComponentConfig
from adapters.files.formats import Format


class DropFolderConfig(ComponentConfig):
    """A drop folder: legacy systems put files into `inbox`; results appear in `outbox`,
    the input moves to `done` (or `failed`). Paths are relative to the config file.
    `done`, `failed` and `work` (where a file sits while it runs) default to siblings of
    the inbox. A file is taken when it is complete: NAME.done exists (`done_file`), or
    its size and times have not changed for `stable_for_s`. `outbox` and `format` are
    where the run's manifest goes and, unless the pipeline names another `sink`, its
    scored records."""

    type: Literal["dropfolder"] = "dropfolder"
    inbox: str
    glob: str = "*"
    stable_for_s: float = Field(default=5.0, ge=0)
    done_file: bool = False
    outbox: str
    format: Format = "jsonl"
    done: str | None = None
    failed: str | None = None
    work: str | None = None
    poll_s: float = Field(default=2.0, gt=0)  # `lgw run`: how often the inbox is scanned

    @field_validator("glob")
    @classmethod
    def _file_name_pattern(cls, v: str) -> str:
        # a pattern of names inside the inbox, never a path: no way out of the folder
        if not v or "/" in v or "\\" in v or "\0" in v or v in (".", "..") or v.startswith("."):
            raise ValueError(f"glob must be a file name pattern such as 'CARDTXN*.DAT' (no folders), found {v!r}")
        return v

    def folders(self, base: Path) -> dict[str, Path]:
        """inbox, outbox, done, failed, work: absolute, normalised (not yet resolved on disk)."""
        def at(path: str | None, default: str) -> Path:
            p = Path(path) if path else Path(self.inbox).parent / default
            return Path(os.path.abspath(p if p.is_absolute() else base / p))

        return {"inbox": at(self.inbox, ""), "outbox": at(self.outbox, ""), "done": at(self.done, "done"),
                "failed": at(self.failed, "failed"), "work": at(self.work, "work")}


class FileSinkConfig(ComponentConfig):
    """Scored records as one file per run in `folder`, in `format`; the file appears
    (renamed into place) only when the run is done. A drop-folder run names it after its
    input (`NAME.scored.EXT`); a table run after the pipeline and the run's start
    (`PIPELINE.YYYYmmddTHHMMSS.scored.EXT`)."""

    type: Literal["file"] = "file"
    folder: str
    format: Format = "jsonl"


class FileRejectsConfig(ComponentConfig):
    """Rejects as one JSON Lines file per run in `folder` (record number, field, offsets,
    raw bytes, reason); published with the run, kept also when the run fails."""

    type: Literal["file"] = "file"
    folder: str
