"""Step 8, promote: register the evaluated model (once per trained model) and, if the gate said so, make it
the champion with an atomic pointer swap. Running it again never registers or promotes twice.

With `gate.approval=manual` a challenger that passes the gate becomes the registry's *candidate* instead:
a second person approves it (flows/approval.py pauses a deployment run for the Prefect UI's form; from the
command line, `python -m flows.registry approve VERSION --reviewer NAME`).

Never cached: what it does depends on the registry as it is now, not on the inputs alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core import faults
from core import registry
from core.registry import export as serving_export
from core.storage.caching import step_task
from schemas.decisions import GateDecision, Release
from core.storage.artifacts import ArtifactRef

log = logging.getLogger(__name__)


def promote(model: ArtifactRef, evaluation: ArtifactRef, decision: GateDecision, name: str,
            lineage: dict[str, Any], workdir: Path, approval: str = "auto") -> Release:
    """Register `model` with its evaluation under `name`; promote it if `decision` says so and the champion
    is still the one the gate compared against (another run may have promoted in between). With
    `approval="manual"` such a challenger becomes the candidate awaiting a reviewer instead."""
    with registry.locked(workdir, name):
        serving = (lineage.get("config") or {}).get("serving") or {}
        serving_export.configure(registry.model_root(workdir, name), serving.get("dir"), serving.get("keep", 3))
        version = registry.register(model, evaluation, name, {**lineage, "gate": decision.model_dump()}, workdir)
        path = registry.version_dir(workdir, name, version)
        promoted, reason = decision.promote, decision.reason
        if promoted:
            current = (registry.champion(workdir, name) or {}).get("version")
            if current == version != decision.champion_version:
                # Another run trained the same model (same content hash, so the same version) and promoted it
                # first: this run changed nothing, and its summary must not claim a promotion too.
                promoted = False
                reason = (f"{reason}; but the same model (version {version}) was made champion by another run "
                          "while this one was being gated: nothing left to promote")
            elif current != decision.champion_version:
                promoted = False
                reason = (f"the champion changed to {current} while this run was being gated against "
                          f"{decision.champion_version}; not promoted: run again to challenge the new champion")
        if promoted and approval == "manual":
            timeout = ((lineage.get("config") or {}).get("gate") or {}).get("approval_timeout")
            entry = registry.propose(workdir, name, version, decision.champion_version, str(lineage.get("run_id")),
                                     reason, started_by=lineage.get("started_by"), expires_in=timeout)
            if replaced := entry.get("replaced"):
                reason = (f"{reason}; it replaces candidate {replaced['version']} (run {replaced['run_id']}, test "
                          f"macro-F1 {replaced['macro_f1']}, this one {replaced['new_macro_f1']}), which can no "
                          "longer be approved")
            log.info("promote: %s version %s passed the gate and awaits approval (gate.approval=manual) until %s",
                     name, version, entry.get("expires_at"))
            return Release(name=name, version=version, path=str(path.resolve()), promoted=False,
                           reason=f"{reason}; awaiting a reviewer's approval (gate.approval=manual) until "
                                  f"{entry.get('expires_at')}", awaiting_approval=True)
        if promoted:
            faults.point("promote:before-pointer")
            registry.promote(workdir, name, version, reason)
            log.info("promote: %s version %s is the champion", name, version)
        else:
            log.info("promote: %s version %s registered; the champion stays (%s)", name, version, reason)
        publish_champion(workdir, name)  # serving.dir newly set: the champion is published even if it stays
    return Release(name=name, version=version, path=str(path.resolve()), promoted=promoted, reason=reason)


def publish_champion(workdir: Path, name: str) -> None:
    """With `serving.dir` configured, make sure its highest number holds the current champion (a run that sets
    serving.dir for the first time publishes the champion it keeps); a no-op otherwise."""
    try:
        current = registry.champion(workdir, name)
    except registry.RegistryError:
        current = None  # a damaged pointer: the registry's own messages say how to repair it
    if current is not None:
        root = registry.model_root(workdir, name)
        serving_export.on_champion_change(root, name, current["version"],
                                          registry.version_dir(workdir, name, current["version"]) / registry.SAVED_MODEL)


promote_task = step_task(promote, cached=False)
