"""Per-sentence cache of what the frozen backbone computes, shared by every run and dataset in a workdir.

An entry is keyed by (what computed it: the backbone's weights hash and the versions of the libraries that ran
it, the part of the network it came from, hash of the sentence's own truncated token ids). The key leaves out the padded length on purpose: with padding masked, a sentence's
output does not depend on how far its batch was padded (a test checks it), so appending rows that change the
chosen sequence length invalidates nothing but the sentences whose own truncation changed.

Storage is append-only: each run adds one immutable Parquet segment holding only what it computed, written
under a temporary name and renamed, with page checksums. Concurrent runs add separate segments; a segment
that fails to read (truncated, garbled) is moved aside and its entries are simply computed again.

    <workdir>/cache/features/<source>/<part>/<segment sha[:16]>.parquet
    source = <backbone sha[:16]>-<hash of the library versions and accelerator[:8]> (`core.model.features.feature_source`)
    part = "embedding" (pooled sentence embedding, float32) or "hidden-frozen<k>" (token-level output of the
           k frozen bottom blocks, float16); "token-ids" (a raw text's untruncated WordPiece ids, int32, keyed
           by the text's sha256: flows.suggest re-reads a pool without running the tokenizer again)
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.storage.artifacts import sha256_file, staging

log = logging.getLogger(__name__)
SEGMENT_SCHEMA = pa.schema([("key", pa.string()), ("n_tokens", pa.int32()), ("value", pa.binary())])
DTYPES = {"embedding": np.float32, "token-ids": np.int32}  # every "hidden-frozen<k>" part is float16


def sentence_key(token_ids: list[int]) -> str:
    """The cache key of one sentence: sha256 of its truncated token ids (int32, little-endian)."""
    return hashlib.sha256(np.asarray(token_ids, dtype="<i4").tobytes()).hexdigest()[:32]


def cache_root(workdir: Path) -> Path:
    """The feature cache of a workdir."""
    return Path(workdir) / "cache" / "features"


class FeatureCache:
    """One part ("embedding" or "hidden-frozen<k>") of one backbone's cached outputs."""

    def __init__(self, workdir: Path, source: str, part: str):
        self.folder = cache_root(workdir) / source / part
        self.dtype = DTYPES.get(part, np.float16)

    def segments(self) -> list[Path]:
        """The cache's segment files, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.parquet"), key=lambda p: (p.stat().st_mtime, p.name))

    def get(self, keys: set[str], segments: list[Path] | None = None) -> dict[str, np.ndarray]:
        """The cached arrays of those `keys` that are present (2-D: tokens x hidden_dim, or 1 x hidden_dim for
        embeddings), looked up in `segments` (default: all of them)."""
        found: dict[str, np.ndarray] = {}
        wanted = pa.array(sorted(keys), pa.string())
        for segment in self.segments() if segments is None else segments:
            if len(found) == len(keys):
                break
            try:
                table = pq.read_table(segment, page_checksum_verification=True)
            except (OSError, pa.ArrowException) as exc:
                self._quarantine(segment, exc)
                continue
            table = table.filter(pc.is_in(table["key"], value_set=wanted))
            for key, n_tokens, value in zip(table["key"].to_pylist(), table["n_tokens"].to_pylist(),
                                            table["value"].to_pylist()):
                if key not in found:
                    found[key] = np.frombuffer(value, dtype=self.dtype).reshape(n_tokens, -1)
        return found

    def put(self, entries: dict[str, np.ndarray]) -> Path | None:
        """Add `entries` as one new immutable segment; returns its path (None if there was nothing to add)."""
        if not entries:
            return None
        keys = sorted(entries)
        arrays = [np.ascontiguousarray(entries[k], dtype=self.dtype).reshape(-1, entries[k].shape[-1]) for k in keys]
        table = pa.table({"key": keys, "n_tokens": pa.array([a.shape[0] for a in arrays], pa.int32()),
                          "value": pa.array([a.tobytes() for a in arrays], pa.binary())}, schema=SEGMENT_SCHEMA)
        with staging(self.folder, ".parquet") as tmp:
            pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
            dest = self.folder / f"{sha256_file(tmp)[:16]}.parquet"
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, dest)
        return dest

    def size(self) -> tuple[int, int]:
        """(number of segments, bytes on disk)."""
        segments = self.segments()
        return len(segments), sum(p.stat().st_size for p in segments)

    def _quarantine(self, segment: Path, exc: BaseException) -> None:
        log.warning("feature cache segment %s is unreadable (%s); its sentences will be computed again", segment, exc)
        try:
            os.replace(segment, segment.with_suffix(".corrupt"))
        except OSError:
            pass
