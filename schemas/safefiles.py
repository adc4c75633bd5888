"""Creating files where others may write too: never through a link, never over a stranger.

Every file the gateway writes is created here. A new file is opened with
`O_CREAT|O_EXCL|O_NOFOLLOW`, so a name someone planted beforehand (a symbolic link to a
file our account can write, a hard link, a FIFO) makes the creation fail instead of
truncating or following it. Outputs are written under an unpredictable temporary name
in their target folder and published by a rename that first checks what it renames
over: only a missing name or a regular file may be replaced, never a link, a folder or a
device. Files and their folder are fsynced, so a published file survives a crash.

The folder given for a file is trusted (it comes from the command line or the
configuration, links in it included); the names inside it are not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from schemas.errors import ConfigError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_TOKEN_HEX = 16  # 64 random bits in every temporary name
_NAME_MAX = 255


class UnsafePath(ConfigError):
    """A name or path that would lead out of its folder, or a link or special file where a
    regular file was expected (or is about to be written)."""


def _describe(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _unsafe_open(path: Path, exc: OSError) -> UnsafePath | OSError:
    """The error of an open refused because of what is at `path`, as one readable line."""
    if exc.errno == errno.EEXIST:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return UnsafePath(f"{path}: appeared while being created; refusing to write to it")
        what = "a file" if stat.S_ISREG(mode) else _describe(mode)
        return UnsafePath(f"{path}: expected a new file, found {what} already there; refusing to write to it")
    if exc.errno == errno.ELOOP:
        return UnsafePath(f"{path}: is a symbolic link; links are not followed")
    if exc.errno == errno.EISDIR:
        return UnsafePath(f"{path}: expected a file, found a directory")
    if exc.errno == errno.ENOTDIR:
        return UnsafePath(f"{path}: its folder {path.parent} is not a directory")
    return exc


def _create(path: Path, mode: int) -> IO[bytes]:
    # `mode` is narrowed by the umask, as open() would: 0o666 & ~0o022 is 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
    return os.fdopen(fd, "wb")


def create_new(path: str | os.PathLike[str], mode: int = 0o666) -> IO[bytes]:
    """A new, empty file at `path`, open for writing; refuses (UnsafePath) if anything
    already has that name, a link or a file planted there included."""
    p = Path(path)
    try:
        return _create(p, mode)
    except OSError as exc:
        raise _unsafe_open(p, exc) from None


def create_unique(path: str | os.PathLike[str], mode: int = 0o666) -> tuple[Path, IO[bytes]]:
    """A new file at `path`, or at `path.1`, `path.2`, ... when that name is taken: what
    is there (a file of an earlier run, a planted link) is never written to."""
    base = Path(path)
    candidate, n = base, 0
    while True:
        try:
            return candidate, _create(candidate, mode)
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}.{n}")
        except OSError as exc:
            raise _unsafe_open(candidate, exc) from None


def ensure_file(path: str | os.PathLike[str], mode: int = 0o666) -> None:
    """A regular file at `path` (the existing one, or a new empty one) for a library that
    opens the name itself (SQLite): refuses a link or anything else there (UnsafePath)."""
    p = Path(path)
    try:
        _create(p, mode).close()
    except FileExistsError:
        check_replaceable(p)
    except OSError as exc:
        raise _unsafe_open(p, exc) from None


def open_existing(path: str | os.PathLike[str], *, write: bool = False) -> IO[bytes]:
    """An existing regular file (one this process made and is resuming), opened without
    following a link: for reading, or (`write`) read-write at its start."""
    p = Path(path)
    # non-blocking: a FIFO planted at the name must not hang the open before it is refused
    flags = (os.O_RDWR if write else os.O_RDONLY) | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise _unsafe_open(p, exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePath(f"{p}: expected a regular file, found {_describe(st.st_mode)}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "r+b" if write else "rb")


def _temp_prefix(final: Path, suffix: str) -> str:
    room = _NAME_MAX - 2 - _TOKEN_HEX - len(os.fsencode(suffix))
    return f".{os.fsdecode(os.fsencode(final.name)[:room])}."  # a long name is cut to fit NAME_MAX


def temp_name(final: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A hidden, unpredictable name beside `final`: `.FINAL.<16 hex digits>SUFFIX`."""
    p = Path(final)
    return p.with_name(f"{_temp_prefix(p, suffix)}{secrets.token_hex(_TOKEN_HEX // 2)}{suffix}")


def is_temp_of(name: str, final: str | os.PathLike[str], suffix: str = ".tmp") -> bool:
    """Whether `name` is one of `temp_name(final, suffix)`'s names (a stale one, say)."""
    prefix = _temp_prefix(Path(final), suffix)
    token = name[len(prefix): len(name) - len(suffix)]
    return (name.startswith(prefix) and name.endswith(suffix) and len(token) == _TOKEN_HEX
            and all(c in "0123456789abcdef" for c in token))


def remove_stale_temps(final: str | os.PathLike[str], suffix: str = ".tmp") -> list[Path]:
    """Removes the temporary files an interrupted writer of `final` left behind (their
    names are random: a new attempt cannot reuse them). Links are removed, not followed."""
    p = Path(final)
    removed = []
    with os.scandir(p.parent) as entries:
        for entry in entries:
            if is_temp_of(entry.name, p, suffix):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p.parent / entry.name)
                    removed.append(p.parent / entry.name)
    return removed


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Makes a rename or a new file in `path` durable (POSIX: the directory entry)."""
    with _dir_fd(Path(path)) as fd:
        os.fsync(fd)


def check_replaceable(final: str | os.PathLike[str]) -> None:
    """Refuses (UnsafePath) a target name that holds something other than a regular file:
    a link, a directory, a FIFO, a device. A missing name is fine."""
    p = Path(final)
    try:
        mode = os.lstat(p).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UnsafePath(f"{p}: its folder {p.parent} is not a directory") from None
    _refuse_unless_regular(p, mode)


def _refuse_unless_regular(final: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise UnsafePath(f"{final}: expected a regular file or nothing there, found {_describe(mode)}; "
                         "refusing to replace it")


@contextlib.contextmanager
def _dir_fd(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Renames the finished file `tmp` over `final`, atomically, and fsyncs the folder.
    Refuses (UnsafePath) when `final` is a link or anything but a regular file, and when
    `tmp` is not the regular file it should be. The names are resolved against their
    folders' descriptors, so the check and the rename look at the same folder."""
    src, dst = Path(tmp), Path(final)
    with _dir_fd(src.parent) as src_dir, (contextlib.nullcontext(src_dir) if src.parent == dst.parent
                                          else _dir_fd(dst.parent)) as dst_dir:
        mode = os.stat(src.name, dir_fd=src_dir, follow_symlinks=False).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafePath(f"{src}: expected the regular file just written, found {_describe(mode)}")
        try:
            mode = os.stat(dst.name, dir_fd=dst_dir, follow_symlinks=False).st_mode
        except FileNotFoundError:
            pass
        else:
            _refuse_unless_regular(dst, mode)
        os.rename(src.name, dst.name, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        os.fsync(dst_dir)
        if src_dir != dst_dir:
            os.fsync(src_dir)


def rename_new(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Moves `src` to `dst` on the same file system without ever replacing what is at
    `dst` (FileExistsError): a hard link, then the old name removed, so a name that
    appeared meanwhile is not overwritten. A link at `src` moves as the link itself.
    Repeating a move a crash interrupted after the link finishes it."""
    s, d = Path(src), Path(dst)
    try:
        os.link(s, d, follow_symlinks=False)
    except FileExistsError:
        if not os.path.samestat(os.lstat(s), os.lstat(d)):
            raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # no hard links here (some network and FAT file systems): check, then rename
        if os.path.lexists(d):
            raise FileExistsError(errno.EEXIST, "refusing to replace an existing file", str(d)) from None
        os.rename(s, d)
        return
    os.unlink(s)


class NewFile:
    """A file written under an unpredictable temporary name beside `final` and published
    over it by `publish()` (fsynced, checked rename); `discard()`, or leaving a `with`
    block with an exception, removes it. Creating one up front proves the target folder
    exists and is writable before any work is done."""

    def __init__(self, final: str | os.PathLike[str], *, suffix: str = ".tmp", mode: int = 0o666) -> None:
        self.final = Path(final)
        check_replaceable(self.final)
        self.path = temp_name(self.final, suffix)
        self.fh: IO[bytes] = create_new(self.path, mode)

    def write(self, data: bytes) -> int:
        return self.fh.write(data)

    def publish(self, *, replace: bool = True) -> Path:
        """Renames it over `final` (fsynced); refused (UnsafePath, or FileExistsError when
        not to `replace` what is there), it is removed."""
        try:
            if not self.fh.closed:
                self.fh.flush()
                os.fsync(self.fh.fileno())
                self.fh.close()
            if replace:
                publish(self.path, self.final)
            else:
                rename_new(self.path, self.final)
                fsync_dir(self.final.parent)
        except BaseException:
            self.discard()
            raise
        return self.final

    def discard(self) -> None:
        self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> NewFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            self.discard()


def atomic_write(final: str | os.PathLike[str], data: bytes, *, stale: bool = False) -> None:
    """`final` holds `data`, or (after a crash) what it held before: never a mix, never
    written through a link. `stale`: this is a repeat of a write a crash interrupted (the
    only writer of `final`): the temporary file that one left is removed first."""
    if stale:
        remove_stale_temps(final)
    with NewFile(final) as new:
        new.write(data)
        new.publish()


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same resolved path, or (hard links, bind
    mounts) the same device and inode. A path that does not exist yet is compared by its
    resolved name only."""
    pa_, pb = Path(a), Path(b)
    if pa_.resolve() == pb.resolve():
        return True
    try:
        return os.path.samestat(os.stat(pa_), os.stat(pb))
    except OSError:
        return False


def create_output(final: str | os.PathLike[str], option: str = "output", *, suffix: str = ".tmp") -> NewFile:
    """A `NewFile` for an output path a user gave (`option` names it in messages): its
    folder is created if missing, and a path that cannot be written (a directory, a link,
    a folder that is a file, no permission) is one ConfigError line, before any work."""
    p = Path(final)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        return NewFile(p, suffix=suffix)
    except UnsafePath as exc:
        raise UnsafePath(f"{option}: {exc}") from None
    except OSError as exc:
        if isinstance(exc, (FileExistsError, NotADirectoryError)):  # a file where a folder should be
            raise ConfigError(f"{option}: cannot create {p}: a part of {p.parent} is a file, not a folder") from None
        raise ConfigError(f"{option}: cannot create {p}: {exc.strerror or exc}") from None


def check_distinct(inputs: Mapping[str, str | os.PathLike[str]], outputs: Mapping[str, str | os.PathLike[str]]) -> None:
    """Refuses (ConfigError) an output that is an input or another output (`name -> path`,
    the names as the user knows them, e.g. `--output`): writing it would destroy the data
    it reads, or mix two outputs. Hard links and links count as the same file."""
    seen = list(inputs.items())
    for name, path in outputs.items():
        for other, other_path in seen:
            if same_file(path, other_path):
                kind = "input" if other in inputs else "output"
                raise ConfigError(f"{name} {path} is the same file as {other} {other_path}: "
                                  f"refusing to overwrite the {kind}; choose another path")
        seen.append((name, path))


def create_outputs(inputs: Mapping[str, str | os.PathLike[str]],
                   outputs: Mapping[str, str | os.PathLike[str] | None], *, suffix: str = ".tmp") -> dict[str, NewFile]:
    """`create_output` for every output a command was given (None: not given), after
    `check_distinct` against its inputs: all are created, or none (ConfigError)."""
    given = {name: path for name, path in outputs.items() if path is not None}
    check_distinct(inputs, given)
    created: dict[str, NewFile] = {}
    try:
        for name, path in given.items():
            created[name] = create_output(path, name, suffix=suffix)
    except BaseException:
        discard_all(created.values())
        raise
    return created


def discard_all(files: Iterable[NewFile]) -> None:
    for new in files:
        new.discard()


__all__ = [
    "NewFile", "UnsafePath", "atomic_write", "check_distinct", "check_replaceable", "create_new", "create_output",
    "create_outputs", "create_unique", "discard_all", "ensure_file",
    "fsync_dir", "is_temp_of",
    "open_existing", "publish", "remove_stale_temps", "rename_new", "same_file", "temp_name",
]
