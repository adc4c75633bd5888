"""Drop folders: where legacy systems leave their nightly files, and where the files go.

An inbox is watched for names matching a glob. A file is taken only when it is complete:
either its done-file (`NAME.done`) exists, or its size and times have not changed for
`stable_for_s`. Taking a file renames it into a work folder the outside world does not
write to; from there it moves to `done/` or `failed/` when its run ends.

Everything that comes from the outside world is untrusted: names are single path
components checked before use, every path is built inside its configured folder, links
are never followed (a symlink in the inbox is reported and left alone, files are opened
with O_NOFOLLOW and checked to be regular files after they were moved in), and a move
never replaces a file at its destination.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from schemas.errors import ConfigError
from schemas.safefiles import NewFile, UnsafePath, atomic_write, fsync_dir, open_existing, rename_new, temp_name

log = logging.getLogger("lgw.dropfolder")

MARKER_SUFFIX = ".done"
_HASH_BLOCK = 1 << 20
_HASHING_BUFFER = 16 << 20
FolderName = Literal["inbox", "outbox", "done", "failed", "work"]
FOLDER_NAMES: tuple[FolderName, ...] = ("inbox", "outbox", "done", "failed", "work")


def safe_name(name: str) -> str:
    """`name` when it is one harmless path component, else UnsafePath."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or len(os.fsencode(name)) > 255):
        raise UnsafePath(f"refusing file name {name!r}: not a plain file name")
    return name


def move_file(src: Path, dst: Path) -> None:
    """Moves src to dst, never replacing a file at dst (FileExistsError): renamed within
    one file system, copied to a temporary name, synced and renamed across file systems;
    never follows a link: a link is moved as the link itself."""
    try:
        rename_new(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        if os.path.islink(src):
            tmp = temp_name(dst, ".moving")
            os.symlink(os.readlink(src), tmp)
            try:
                rename_new(tmp, dst)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        else:
            with open_existing(src) as fin, NewFile(dst, suffix=".moving") as fout:
                shutil.copyfileobj(fin, fout.fh, _HASH_BLOCK)
                fout.publish(replace=False)
        os.unlink(src)
    fsync_dir(dst.parent)
    fsync_dir(src.parent)


@dataclass(frozen=True)
class ContentHash:
    sha256: str
    size: int
    identity: tuple[int, int, int, int]  # device, inode, size, mtime_ns of what was hashed


def content_hash(path: Path) -> ContentHash:
    """sha256 of a regular file, read in blocks (memory stays flat), never through a link."""
    with open_existing(path) as fh:
        st = os.fstat(fh.fileno())
        digest = hashlib.sha256()
        # one buffer, refilled: the read and the hash each release the GIL, and a thread
        # that hashes while the main thread runs Python code waits for the GIL after each,
        # so the blocks are large (beside start-up's imports a 480 MB hash took 0.64 s
        # in 1 MiB blocks, 0.50 s in 16 MiB ones)
        buffer = bytearray(_HASHING_BUFFER)
        view = memoryview(buffer)
        while n := os.readv(fh.fileno(), [buffer]):
            digest.update(view[:n])
    return ContentHash(digest.hexdigest(), st.st_size, _identity(st))


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class HashAhead:
    """Content hashes of complete inbox files, made in order on a thread of their own from
    `start`: while the run is set up (the contract compiled, the model loaded, the audit
    log opened) or an earlier file is processed, so a claim does not wait for its hash
    (0.08 s of single-threaded work per 120 MB, before any record is read). A hash made
    ahead is used only if the file is still the one hashed (device, inode, size, mtime);
    else, or if hashing failed, the file is hashed again when asked, and that says why."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[Path, Future[ContentHash]] = {}

    def start(self, paths: Iterable[Path]) -> None:
        """Hashes `paths` (the inbox's complete files, in the order they will be claimed);
        what was started for a file no longer among them is dropped."""
        wanted = list(paths)
        for gone in set(self._ahead) - set(wanted):  # claimed elsewhere, or removed
            self._ahead.pop(gone).cancel()
        for path in wanted:
            if path not in self._ahead:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="lgw-hash-ahead")
                self._ahead[path] = self._pool.submit(content_hash, path)

    def hash(self, path: Path) -> ContentHash:
        ahead = self._ahead.pop(path, None)
        try:
            made = ahead.result() if ahead is not None else None
        except Exception:  # cancelled, or the file could not be hashed: made again below, which says why
            made = None
        if made is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and _identity(st) == made.identity:
                    return made
        return content_hash(path)

    @classmethod
    def begin(cls, inbox: Path, paths: Iterable[Path]) -> None:
        """Starts hashing `paths` for the next run on `inbox` to take over (`begun`): before
        the process has loaded what the run needs (gateway.inbox_early)."""
        ahead = cls()
        ahead.start(paths)
        previous = _BEGUN.pop(inbox, None)
        if previous is not None:
            previous.close()
        _BEGUN[inbox] = ahead

    @classmethod
    def begun(cls, inbox: Path) -> HashAhead:
        """The hashes begun for `inbox` (`begin`), taken once; else a new HashAhead."""
        return _BEGUN.pop(inbox, None) or cls()

    def close(self) -> None:
        """Hashes not begun are dropped; one being made ends on its own."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._ahead.clear()


_BEGUN: dict[Path, HashAhead] = {}  # inbox -> hashes begun before its run was set up


@dataclass(frozen=True)
class Folders:
    """A pipeline's folders, created if missing and resolved once (the configured paths
    are trusted, links among them included; what is inside them is not)."""

    inbox: Path
    outbox: Path
    done: Path
    failed: Path
    work: Path

    @classmethod
    def prepare(cls, paths: Mapping[str, Path]) -> Folders:
        resolved: dict[str, Path] = {}
        for name in FOLDER_NAMES:
            p = Path(paths[name])
            p.mkdir(parents=True, exist_ok=True)
            resolved[name] = p.resolve(strict=True)
        for a, pa in resolved.items():
            for b, pb in resolved.items():
                if a < b and (pa == pb or pa in pb.parents or pb in pa.parents):
                    raise ConfigError(f"drop folder {a} ({pa}) and {b} ({pb}) must be separate folders")
        return cls(**resolved)

    @classmethod
    def peek(cls, paths: Mapping[str, Path]) -> Folders:
        """The folders as configured, resolved as far as they exist, nothing created: a
        look into the inbox before a run prepares them."""
        return cls(**{name: Path(paths[name]).resolve() for name in FOLDER_NAMES})

    def folder(self, name: FolderName) -> Path:
        path: Path = getattr(self, name)
        return path

    def path(self, folder: FolderName, name: str) -> Path:
        """`folder/name` for an untrusted name: one plain component, so it stays inside."""
        return self.folder(folder) / safe_name(name)

    def locate(self, path: str | os.PathLike[str]) -> tuple[FolderName, str]:
        """Which of inbox/done/failed holds `path` (given by an operator or from the state
        store), and its name there. The path must name a regular file directly inside
        one of them; anything else (another folder, `..`, a link) is refused."""
        p = Path(os.path.abspath(path))
        parent = p.parent.resolve()
        for name in ("inbox", "done", "failed"):
            if parent == self.folder(name):
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode):
                    raise UnsafePath(f"{p}: not a regular file (links are not followed)")
                return name, safe_name(p.name)
        raise UnsafePath(f"{p} is not inside this pipeline's inbox, done or failed folder "
                         f"({self.inbox}, {self.done}, {self.failed})")

    def free_name(self, folder: FolderName, name: str) -> str:
        """`name`, or `name.1`, `name.2`... when that is taken (a daily file of the same
        name must not overwrite yesterday's)."""
        base = safe_name(name)
        candidate, n = base, 0
        while os.path.lexists(self.folder(folder) / candidate):
            n += 1
            candidate = f"{base}.{n}"
        return candidate


@dataclass(frozen=True)
class Arrival:
    """A complete file in the inbox."""

    name: str
    path: Path
    size: int
    mtime_ns: int
    marker: Path | None = None  # its done-file, when the folder uses them


class DropFolder:
    """Watches one inbox and moves files between the folders."""

    def __init__(self, folders: Folders, *, glob: str = "*", stable_for_s: float = 5.0, done_file: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.folders = folders
        self.glob = glob
        self.stable_for_s = stable_for_s
        self.done_file = done_file
        self._clock = clock
        self._seen: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._warned: set[str] = set()

    # ---- watching
    def scan(self) -> tuple[list[Arrival], list[str]]:
        """(complete files, oldest first; names still being written or waiting for their
        done-file). Links, folders, hidden names and done-files are never taken."""
        now = self._clock()
        ready: list[Arrival] = []
        waiting: list[str] = []
        seen: set[str] = set()
        with os.scandir(self.folders.inbox) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name.endswith(MARKER_SUFFIX) or not fnmatch.fnmatchcase(name, self.glob):
                    continue
                try:
                    safe_name(name)
                except UnsafePath as exc:
                    self._warn_once(name, str(exc))
                    continue
                if entry.is_symlink():
                    self._warn_once(name, f"{name}: a symbolic link in the inbox is not followed; left alone")
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                seen.add(name)
                marker = self.folders.inbox / f"{name}{MARKER_SUFFIX}" if self.done_file else None
                if self._complete(name, st, now, marker):
                    ready.append(Arrival(name, self.folders.inbox / name, st.st_size, st.st_mtime_ns, marker))
                else:
                    waiting.append(name)
        for gone in set(self._seen) - seen:
            del self._seen[gone]
        ready.sort(key=lambda a: (a.mtime_ns, a.name))
        return ready, sorted(waiting)

    def _complete(self, name: str, st: os.stat_result, now: float, marker: Path | None) -> bool:
        if marker is not None:
            try:
                return stat.S_ISREG(os.lstat(marker).st_mode)
            except FileNotFoundError:
                return False
        signature = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        previous = self._seen.get(name)
        since = previous[1] if previous is not None and previous[0] == signature else now
        self._seen[name] = (signature, since)
        # The file system's times say how long nothing changed (ctime moves on every write
        # and on every utime, so a copy that back-dates mtime does not fool it); our own
        # observations cover a clock that disagrees with the file server's.
        quiet = now - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
        return max(quiet, now - since) >= self.stable_for_s

    def _warn_once(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning("%s", message)

    # ---- moving
    def claim(self, name: str, work_name: str, hashed: ContentHash | None = None) -> Path:
        """Moves inbox/name into the work folder (where nobody else writes). With `hashed`,
        checks that what moved is the very file that was hashed, unchanged."""
        src = self.folders.path("inbox", name)
        dst = self.folders.path("work", work_name)
        move_file(src, dst)
        st = os.lstat(dst)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{name}: not a regular file once taken (links are not followed)")
        if hashed is not None and _identity(st) != hashed.identity:
            raise UnsafePath(f"{name}: changed between being hashed and being taken; drop it again")
        return dst

    def take_back(self, folder: FolderName, name: str, work_name: str) -> Path:
        """Moves done/name or failed/name (or inbox/name) into the work folder: a replay."""
        src = self.folders.path(folder, name)
        dst = self.folders.path("work", work_name)
        move_file(src, dst)
        if not stat.S_ISREG(os.lstat(dst).st_mode):
            raise UnsafePath(f"{name}: not a regular file (links are not followed)")
        return dst

    def settle(self, work_path: Path, folder: Literal["done", "failed"], name: str,
               marker: str | None = None) -> Path:
        """Moves a finished input from the work folder to done/ or failed/ as `name`
        (chosen beforehand with `Folders.free_name`), its done-file along with it."""
        if work_path.parent != self.folders.work:
            raise UnsafePath(f"{work_path} is not in the work folder {self.folders.work}")
        dst = self.folders.path(folder, name)
        if os.path.lexists(work_path):
            move_file(work_path, dst)
        if marker is not None:
            src = self.folders.path("inbox", marker)
            if os.path.lexists(src) and not os.path.islink(src):
                move_file(src, self.folders.path(folder, self.folders.free_name(folder, marker)))
        return dst


__all__ = [
    "FOLDER_NAMES", "MARKER_SUFFIX", "Arrival", "ContentHash", "DropFolder", "Folders", "HashAhead", "UnsafePath",
    "atomic_write", "content_hash", "fsync_dir", "move_file", "safe_name",
]
