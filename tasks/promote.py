"""Step 7, promote: register the evaluated model as a new version and make it the champion.

Never cached: whether to promote depends on the registry as it is now, not on the inputs alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks import registry
from tasks.caching import step_task
from tasks.io import ArtifactRef

log = logging.getLogger(__name__)


class Release(BaseModel):
    """What promotion did: the registered version, where it lives, and whether it became champion."""

    name: str
    version: str
    path: str
    promoted: bool
    reason: str


def promote(model: ArtifactRef, evaluation: ArtifactRef, name: str, lineage: dict[str, Any],
            workdir: Path) -> Release:
    """Register `model` with its evaluation under `name` and promote it; returns the `Release`."""
    version = registry.register(model, evaluation, name, lineage, workdir)
    reason = "every successful run is promoted (no champion/challenger gate configured)"
    registry.promote(workdir, name, version, reason)
    path = registry.version_dir(workdir, name, version)
    log.info("promote: %s version %s is the champion", name, version)
    return Release(name=name, version=version, path=str(path.resolve()), promoted=True, reason=reason)


promote_task = step_task(promote, cached=False)
