"""Artifacts on disk: atomic writes, content hashes, and the small references steps pass to each other.

Every file is written under a temporary name in its destination folder, flushed, fsynced and renamed, and
the folder is fsynced after the rename, so a reader sees either the old file or the whole new one, and a power
loss after a write returned cannot undo it. The temporary file (or folder) gets the permissions an ordinary
`open()` (or `mkdir`) would give under the user's umask, 0666 & ~umask (0777 & ~umask), not `mkstemp`'s
owner-only 0600 (0700): a colleague or a serving account reads what a run wrote exactly as the umask allows. Artifacts are content-addressed: a step's output is
stored as `<workdir>/artifacts/<step>/<sha256[:16]><suffix>`, so equal content is stored once and a
reference can always be checked against the bytes it points to.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from core import faults
from schemas.files import sha256_file  # noqa: F401 (the artifacts' content hash)

CHUNK = 1 << 20


def file_state(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten: its size, inode, and modification and change times (ns). The key
    under which a file's hash (or parse) is remembered in a process, so a rewritten file is read again.
    Raises OSError if the file is missing."""
    stat = os.stat(path)
    return stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


def sha256_file_cached(path: Path) -> str:
    """`sha256_file`, computed once per process for each state of the file (`file_state`): a file read several
    times (a features file by split, the backbone's weights by every step) is hashed once until it changes.
    Raises OSError if the file is missing."""
    return _sha256_at(str(path), file_state(path))


@functools.lru_cache(maxsize=256)
def _sha256_at(path: str, _state: tuple[int, int, int, int]) -> str:
    return sha256_file(Path(path))


def sha256_tree(folder: Path) -> str:
    """Hex sha256 of a folder: the sorted relative paths and the sha256 of each file."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status, `Umask:`); elsewhere
    by setting and restoring it under a lock (the standard library's only way; the lock keeps this module's own
    callers from racing, see os.umask)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _as_if_created(path: Path, is_dir: bool = False) -> None:
    """Give a `mkstemp` file (0600) or `mkdtemp` folder (0700) the mode `open()` or `mkdir` would have given it:
    0666 (0777) less the umask, so atomic writes honour the user's umask like any other write."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(dest: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest` (mode 0666 & ~umask); on success rename it over `dest`, on failure
    remove it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    _as_if_created(tmp)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(dest: Path, data: bytes) -> Path:
    """Write `data` to `dest` atomically and return `dest`."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def write_json_atomic(dest: Path, payload: Any) -> Path:
    """Write `payload` as indented, key-sorted JSON to `dest` atomically."""
    return write_bytes_atomic(dest, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries to disk: a rename is durable only once its directory is fsynced (as databases
    do), else a power loss right after it can bring back the old name, or none."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactRef(BaseModel):
    """A small, hashable pointer to what a step wrote: where (relative to the workdir), its hash, its rows.

    `meta` carries the step's figures (counts, chosen lengths) for the run summary. Cache keys use
    `sha256`, never `path`, so a moved workdir or a re-written path cannot fool them.
    """

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    rows: int = 0
    meta: dict[str, Any] = Field(default_factory=dict)

    def resolve(self, workdir: Path) -> Path:
        """Absolute location of the artifact under `workdir`."""
        return Path(workdir) / self.path

    def is_intact(self, workdir: Path) -> bool:
        """True if the artifact exists and its bytes still hash to `sha256`."""
        location = self.resolve(workdir)
        try:
            actual = sha256_tree(location) if location.is_dir() else sha256_file(location)
        except OSError:
            return False
        return actual == self.sha256

    def cache_fingerprint(self) -> str:
        """What a cache key sees of this artifact: its content, not its place."""
        return self.sha256


class CorruptArtifact(RuntimeError):
    """An artifact's bytes no longer match its recorded hash (deleted, truncated or altered).

    Not an OSError on purpose: retrying the reader cannot help, the producing step must run again.
    """


def artifact_dir(workdir: Path, step: str) -> Path:
    """The folder holding a step's content-addressed outputs."""
    return Path(workdir) / "artifacts" / step


@contextlib.contextmanager
def staging(folder: Path, suffix: str = "", is_dir: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary file (or folder) inside `folder`, with the mode the umask gives a new file (or
    folder); whatever is left of it is removed on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=".staging.", suffix=suffix, dir=folder))
    else:
        fd, name = tempfile.mkstemp(prefix=".staging.", suffix=suffix, dir=folder)
        os.close(fd)
        tmp = Path(name)
    _as_if_created(tmp, is_dir)
    try:
        yield tmp
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def store_file(workdir: Path, step: str, tmp: Path, suffix: str, rows: int, meta: dict[str, Any]) -> ArtifactRef:
    """Move a finished staging file into the step's content-addressed store and return its reference."""
    digest = sha256_file(tmp)
    dest = artifact_dir(workdir, step) / f"{digest[:16]}{suffix}"
    _fsync(tmp)
    faults.point(f"{step}:before-rename", dest)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return ArtifactRef(path=dest.relative_to(workdir).as_posix(), sha256=digest, rows=rows, meta=meta)


def store_dir(workdir: Path, step: str, tmp: Path, rows: int, meta: dict[str, Any]) -> ArtifactRef:
    """Move a finished staging folder into the step's content-addressed store and return its reference.

    An intact folder with the same content is kept as it is; a damaged one is moved aside and replaced.
    """
    digest = sha256_tree(tmp)
    dest = artifact_dir(workdir, step) / digest[:16]
    ref = ArtifactRef(path=dest.relative_to(workdir).as_posix(), sha256=digest, rows=rows, meta=meta)
    if dest.exists():
        if ref.is_intact(workdir):
            return ref
        trash = Path(tempfile.mkdtemp(prefix=".damaged.", dir=dest.parent))
        os.replace(dest, trash / dest.name)
        shutil.rmtree(trash, ignore_errors=True)
    for path in tmp.rglob("*"):
        if path.is_file():
            _fsync(path)
    for folder in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        fsync_dir(folder)
    faults.point(f"{step}:before-rename", dest)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return ref


def write_parquet(
    workdir: Path, step: str, table: pa.Table, meta: dict[str, Any] | None = None, rows: int | None = None
) -> ArtifactRef:
    """Write `table` as zstd Parquet into the step's store, atomically; returns its reference."""
    with staging(artifact_dir(workdir, step), ".parquet") as tmp:
        faults.point("io:write", tmp)
        pq.write_table(table, tmp, compression="zstd")
        return store_file(workdir, step, tmp, ".parquet", table.num_rows if rows is None else rows, meta or {})


def store_json(workdir: Path, step: str, payload: Any, rows: int = 0, meta: dict[str, Any] | None = None) -> ArtifactRef:
    """Write `payload` as JSON into the step's content-addressed store; returns its reference."""
    with staging(artifact_dir(workdir, step), ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        return store_file(workdir, step, tmp, ".json", rows, meta or {})


def read_parquet(ref: ArtifactRef, workdir: Path, columns: list[str] | None = None,
                 filters: list[tuple] | None = None) -> pa.Table:
    """Read an artifact's Parquet (optionally only `columns`, and only the rows matching pyarrow `filters`,
    e.g. `[("split", "==", "test")]`) after checking its hash; raises `CorruptArtifact` if it changed.

    The hash is computed once per process for a given state of the file (`sha256_file_cached`): a step that
    reads three splits of one features file hashes it once, while any rewrite of the file is hashed again."""
    path = ref.resolve(workdir)
    try:
        intact = sha256_file_cached(path) == ref.sha256
    except OSError:
        intact = False
    if not intact:
        raise CorruptArtifact(f"{path} is missing or does not match its recorded sha256")
    return pq.read_table(path, columns=columns, filters=filters)
