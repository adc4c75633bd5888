"""`lgw batch run PIPELINE --config FILE`: the pipeline's complete inbox files begin to be
hashed before the process imports the data stack (numpy, pyarrow, onnxruntime, SQLAlchemy,
the pipeline: 0.4 s on one core), on a thread of their own, on the other core.

A run cannot claim a file before it has the file's content hash (its identity: content
processed before is not run again), and hashing takes 0.09 s per 120 MB: a 4-million-record
file (480 MB) kept its run waiting 0.35 s after start-up. `build_runtime` takes over what
was begun (`HashAhead.begun`), and a hash made ahead is used only if the file is still the
one hashed (device, inode, size, mtime).

This is a look ahead, not the run: the config is read with the same loader and the same
drop-folder model, and nothing is created or moved. Whatever it cannot make sense of (no
such pipeline, a source that is not a drop folder, a config that does not parse) it leaves
to the run, which reports it."""

from __future__ import annotations

from pathlib import Path


def begin_hashing(config: str | None, pipeline: str | None) -> None:
    """Starts hashing `pipeline`'s complete inbox files, as its run will claim them."""
    if not config or not pipeline:
        return
    try:
        from adapters.files.config import DropFolderConfig
        from adapters.files.dropfolder import DropFolder, Folders, HashAhead
        from schemas.yaml_loader import load_yaml

        path = Path(config)
        raw = load_yaml(path.read_text(encoding="utf-8"), str(path))
        source = raw["pipelines"][pipeline]["source"]
        if not isinstance(source, dict) or source.get("type", "dropfolder") != "dropfolder":
            return
        drop = DropFolderConfig.model_validate(source)
        folders = Folders.peek(drop.folders(path.parent))  # relative to the config file, as the run's
        watch = DropFolder(folders, glob=drop.glob, stable_for_s=drop.stable_for_s, done_file=drop.done_file)
        HashAhead.begin(folders.inbox, [arrival.path for arrival in watch.scan()[0]])
    except Exception:  # only a head start: the run reads the config again and says what is wrong
        return


__all__ = ["begin_hashing"]
