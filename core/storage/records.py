"""Prefect's result records of the steps: where they live, how they are written, and when one is unusable.

A record is one JSON file, `<workdir>/results/<cache key>`, holding Prefect's metadata and the step's result:
an `ArtifactRef` (or, for a failed attempt, the error's type and message), written and read by
`ArtifactRefSerializer`, so no pickle is ever loaded from the workdir. A record is usable only if it is ours
and the artifact it points to still hashes to what was recorded; `evict_if_stale` deletes one that is not,
so the step runs again instead of returning a path to a deleted or altered file. Prefect reads a record with
the serializer the record names (pickle included), so a foreign record must be evicted before Prefect looks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect.serializers import Serializer

from core.storage.artifacts import ArtifactRef

log = logging.getLogger(__name__)

RECORD_SERIALIZER = "retrain-artifact-ref"


def records_dir(workdir: Path) -> Path:
    """Where Prefect's result records for this workdir live."""
    return Path(workdir) / "results"


class RecordedFailure(RuntimeError):
    """A step's failure as read back from its result record: the error's type name and message only."""


class ArtifactRefSerializer(Serializer):
    """Stores a step's result (an `ArtifactRef`, or the error it failed with) as plain JSON; reads back
    nothing else, so no pickle is ever loaded from the workdir."""

    type: str = RECORD_SERIALIZER

    def dumps(self, obj: Any) -> bytes:
        """JSON bytes of an `ArtifactRef` or of an exception's type and message; TypeError for anything else."""
        if isinstance(obj, BaseException):
            return json.dumps({"error": type(obj).__name__, "message": str(obj)}).encode()
        if not isinstance(obj, ArtifactRef):
            raise TypeError(f"steps must return an ArtifactRef, got {type(obj).__name__}")
        return obj.model_dump_json().encode()

    def loads(self, blob: bytes) -> ArtifactRef | RecordedFailure:
        """The `ArtifactRef` (or `RecordedFailure`) that `dumps` wrote; ValueError if `blob` is neither."""
        content = json.loads(blob)
        if isinstance(content, dict) and "error" in content:
            return RecordedFailure(f"{content['error']}: {content.get('message', '')}")
        return ArtifactRef.model_validate(content)


class FlowOutcomeSerializer(Serializer):
    """The flows' result serializer. Prefect always writes a failed flow run's exception to the default result
    storage (`~/.prefect/storage`, with the process's umask), pickled by default: the exception of a rejected
    file quotes its rows. This one writes only the exception's type name (the message is the run's state message
    and our own stderr), or a returned string (a path), as JSON."""

    type: str = "retrain-flow-outcome"

    def dumps(self, obj: Any) -> bytes:
        """JSON bytes: `{"error": TYPE}` for an exception, the string for a string; TypeError for anything else."""
        if isinstance(obj, BaseException):
            return json.dumps({"error": type(obj).__name__}).encode()
        if not isinstance(obj, str):
            raise TypeError(f"a flow returns a path string, got {type(obj).__name__}")
        return json.dumps(obj).encode()

    def loads(self, blob: bytes) -> str | RecordedFailure:
        """What `dumps` wrote: the string, or a `RecordedFailure` naming the error's type."""
        content = json.loads(blob)
        if isinstance(content, dict) and "error" in content:
            return RecordedFailure(str(content["error"]))
        if not isinstance(content, str):
            raise ValueError("not a flow outcome record")
        return content


def record_problem(record: Path, workdir: Path) -> str | None:
    """Why the record file `record` cannot be used (not JSON, not written by `ArtifactRefSerializer`, no artifact
    reference, artifact missing or altered under `workdir`), or None if it can be or does not exist. Reads only."""
    try:
        content = json.loads(record.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "not a JSON record"
    if not isinstance(content, dict):
        return "not a JSON record"
    serializer = (content.get("metadata") or {}).get("serializer") or {}
    if serializer.get("type") != RECORD_SERIALIZER:
        return f"written by serializer {serializer.get('type')!r}, not {RECORD_SERIALIZER!r}"
    try:
        ref = ArtifactRef.model_validate_json(content["result"])
    except (KeyError, ValueError, TypeError):
        return "result is not an artifact reference"
    if not ref.is_intact(workdir):
        return f"artifact {ref.path} is missing or altered"
    return None


def evict_if_stale(record: Path, workdir: Path) -> bool:
    """Delete the record file `record` if `record_problem` finds it unusable, with a warning that the step will
    run again; True if it was evicted."""
    reason = record_problem(record, workdir)
    if reason is None:
        return False
    log.warning("cache record %s is unusable (%s); the step will run again", record.name, reason)
    record.unlink(missing_ok=True)
    return True
