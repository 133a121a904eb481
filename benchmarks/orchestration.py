"""What Prefect costs: the retrain flow versus the same step functions called by a plain Python script.

Both run cold in a fresh process and a fresh workdir on the bundled data with `make run`'s settings but the
backbone frozen (`train.unfreeze_top=0`: a short run, so the fixed costs weigh the most); the difference is the
orchestration overhead (temporary API start-up, task runs, cache keys, result records,
artifacts). Then the flow again on the same workdir: the warm, fully cached re-run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import table, write_section  # noqa: E402

OVERRIDES = {"data.conflicts": "drop", "train.unfreeze_top": 0}


def plain(workdir: Path) -> None:
    """The pipeline's step functions in the flow's order (`flows/dag.py`), no Prefect: the baseline."""
    import flows  # noqa: F401
    from core.model.backbone import Backbone
    from flows import dag
    from schemas.config import RetrainConfig

    cfg = RetrainConfig.from_parameters(workdir=workdir, overrides=OVERRIDES)
    dag.pipeline(dag.PlainSteps(cfg), cfg, Backbone.resolve(None))  # the flow's steps, declared once, no Prefect


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--plain":
        plain(Path(sys.argv[2]))
        return
    sets = [arg for key, value in OVERRIDES.items() for arg in ("--set", f"{key}={value}")]
    with tempfile.TemporaryDirectory() as tmp:
        plain_s = timed([sys.executable, __file__, "--plain", f"{tmp}/plain"])
        flow_s = timed([sys.executable, "-m", "flows.retrain", "--workdir", f"{tmp}/flow", *sets])
        warm_s = timed([sys.executable, "-m", "flows.retrain", "--workdir", f"{tmp}/flow", *sets])
    rows = [["plain script, same functions (cold)", f"{plain_s:.0f}", "1.00"],
            ["Prefect flow (cold)", f"{flow_s:.0f}", f"{flow_s / plain_s:.2f}"],
            ["Prefect flow, unchanged re-run (warm, all cached)", f"{warm_s:.0f}", f"{warm_s / plain_s:.2f}"]]
    write_section("orchestration", "Bundled data, `make run` settings with `train.unfreeze_top=0`, each in a "
                  "fresh process.\n\n"
                  + table(["run", "wall s", "ratio to plain"], rows)
                  + f"\n\nOrchestration overhead, cold: {100 * (flow_s / plain_s - 1):.1f} %. "
                  f"Warm re-run / cold flow: {warm_s / flow_s:.2f}.")


if __name__ == "__main__":
    main()
