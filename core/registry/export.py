"""A version's exports: its raw-text SavedModel (`write_saved_model`, at registration) and the champion's,
published where TF Serving looks: `<serving dir>/<model name>/<N>/`.

TF Serving watches a model's *base path* and serves the numbered sub-folder with the highest number, loading a
new one without a restart when it appears (its file-system storage path source; the numbers are versions, any
other name is ignored). So each change of champion (promote, approve, rollback: every path goes through
`core.registry.store.promote`) writes the new champion's `saved_model/` as the next number, N + 1, even when
it is an older model coming back (a rollback): the highest number is always the champion.

A number never appears half-written: the copy is assembled in a hidden folder beside it (`.<N>.tmp-...`, a name
TF Serving skips) and renamed into place, one atomic rename on a POSIX file system. The newest `keep` numbers
stay (the one being served and the ones before it, for TF Serving's own version policy or a quick manual
rollback); older ones are renamed away and deleted. Each number holds the registry version it came from in
`assets.extra/registry.json` (`assets.extra` is TF Serving's folder for extra files, e.g. warm-up requests).

Where to publish is a setting of the retrain run (`serving.dir`, `serving.keep`), recorded per model name in
`models/<name>/serving.json` so that a later approval or rollback from the command line publishes too.
A failure to publish never undoes a promotion: it is logged with the command that repairs it
(`python -m flows.registry export-serving --to DIR`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.registry.version import RegistryError, Version
from core.storage.artifacts import fsync_dir, write_json_atomic

log = logging.getLogger(__name__)

SETTINGS = "serving.json"
MARKER = Path("assets.extra") / "registry.json"


def configure(model_root: Path, directory: Path | str | None, keep: int = 3) -> None:
    """Record where champion changes of the model in `model_root` (models/<name>/) are published: `directory`
    (made absolute) keeping `keep` numbers; None stops publishing."""
    path = Path(model_root) / SETTINGS
    if directory is None:
        path.unlink(missing_ok=True)
        return
    wanted = {"dir": str(Path(directory).expanduser().resolve()), "keep": int(keep)}
    if not path.is_file() or settings(model_root) != wanted:
        write_json_atomic(path, wanted)


def settings(model_root: Path) -> dict[str, Any] | None:
    """The recorded `{"dir", "keep"}` of a model, or None when champion changes are not published."""
    try:
        return json.loads((Path(model_root) / SETTINGS).read_text())
    except FileNotFoundError:
        return None


def numbers(base: Path) -> list[int]:
    """The version numbers TF Serving sees under `base` (`<serving dir>/<model name>`), ascending."""
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())


def published(base: Path) -> dict[str, Any] | None:
    """What the highest number under `base` holds (its `assets.extra/registry.json`), or None."""
    found = numbers(base)
    if not found:
        return None
    try:
        return {"number": found[-1], **json.loads((base / str(found[-1]) / MARKER).read_text())}
    except (OSError, ValueError):
        return {"number": found[-1]}


def publish(saved_model: Path, base: Path, name: str, version: str, keep: int = 3) -> Path:
    """Copy `saved_model` to `base/<N>` with N one above the highest there (1 for the first), atomically; keep the
    newest `keep` numbers; returns the new folder. Publishing the version the highest number already holds
    changes nothing (and returns that folder). Raises `FileNotFoundError` if `saved_model` is missing."""
    if not (Path(saved_model) / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{saved_model} holds no saved_model.pb")
    base.mkdir(parents=True, exist_ok=True)
    current = published(base)
    if current and current.get("version") == version and current.get("model") == name:
        return base / str(current["number"])
    number = (current["number"] if current else 0) + 1
    staging = Path(tempfile.mkdtemp(prefix=f".{number}.tmp-", dir=base))
    try:
        shutil.copytree(saved_model, staging, dirs_exist_ok=True)
        marker = staging / MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"model": name, "version": version,
                                      "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                                     indent=2) + "\n")
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700: let the server's user read it
        os.rename(staging, base / str(number))  # atomic; refuses to replace an existing number
        fsync_dir(base)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in numbers(base)[:-keep]:
        trash = base / f".deleting-{old}"
        os.replace(base / str(old), trash)
        shutil.rmtree(trash, ignore_errors=True)
    log.info("serving: %s version %s published as %s", name, version, base / str(number))
    return base / str(number)


def on_champion_change(model_root: Path, name: str, version: str, saved_model: Path) -> Path | None:
    """Publish the new champion if the model's serving directory is configured; returns the folder written (None
    when not configured or when it failed: logged, never raised, the promotion stands)."""
    wanted = settings(model_root)
    if not wanted:
        return None
    try:
        return publish(saved_model, Path(wanted["dir"]) / name, name, version, int(wanted.get("keep", 3)))
    except Exception as exc:  # noqa: BLE001 (the champion changed; serving catches up with the repair command)
        log.error("serving: could not publish %s version %s to %s: %s; publish it with `python -m flows.registry "
                  "export-serving --to %s --name %s`", name, version, wanted["dir"], exc, wanted["dir"], name)
        return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_saved_model(folder: Path, lineage: dict[str, Any]) -> None:
    """Write the version's `saved_model/` (raw sentences in: core.model.serving) with the tokenizer of the backbone
    the run was configured with (its lineage's `model.backbone`; the bundled one if unset). Raises
    `RegistryError` if that backbone is not the one the model was trained on."""
    from core.model.backbone import Backbone
    from core.model.serving import export_saved_model

    card = Version(folder).read_card()
    backbone = Backbone.resolve(((lineage.get("config") or {}).get("model") or {}).get("backbone"))
    if card.get("backbone_sha256") != backbone.sha256:
        raise RegistryError(f"cannot export the model: it was trained on the backbone with sha256 "
                            f"{str(card.get('backbone_sha256'))[:12]}, but its run names {backbone.path} "
                            f"({backbone.sha256[:12]})")
    try:
        export_saved_model(Version(folder).model, card, backbone.path, Version(folder).saved_model)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 (TensorFlow reports a full disk as its own error types)
        if "no space left on device" not in str(exc).lower():
            raise
        raise OSError(errno.ENOSPC, "No space left on device (writing the SavedModel)",
                      str(Version(folder).saved_model)) from None
