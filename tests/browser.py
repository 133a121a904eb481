"""Headless Chromium (Debian's `chromium` package, installed by `make chromium`) for checks of rendered pages.

`dump_dom` returns the DOM after scripts ran for a virtual-time budget (what a person would see, as HTML);
`screenshot` photographs the page. Both use a fresh profile and no network beyond the URL itself.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


class ChromiumMissing(RuntimeError):
    """No Chromium on this machine."""


def chromium_path() -> str:
    """The Chromium executable; raises `ChromiumMissing` with the fix when there is none."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise ChromiumMissing("headless Chromium is not installed (no `chromium` on PATH): run `make chromium` "
                              "(apt-get install -y chromium); .ci/run does this before `make test`")
    return browser


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([chromium_path(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, check=False)


def dump_dom(url: str, budget_ms: int = 5000, size: str = "1400,1000", timeout: float = 180) -> str:
    """The page's DOM (serialised HTML) after `budget_ms` of virtual time."""
    result = _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size}", "--dump-dom", url], timeout)
    if result.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom {url} exited {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def screenshot(url: str, out: Path, budget_ms: int = 5000, size: str = "1400,1000", timeout: float = 180) -> Path:
    """Photograph `url` after `budget_ms` of virtual time; returns the PNG's path."""
    out = Path(out)
    out.unlink(missing_ok=True)
    result = _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={out}", url], timeout)
    if result.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium --screenshot {url} exited {result.returncode}: {result.stderr[-2000:]}")
    return out


def ink(png: Path) -> float:
    """The share of pixels that are not the page background (the most common colour): 0 for a blank page."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24)
    background = max(colours)[0]
    return 1 - background / (image.width * image.height)
