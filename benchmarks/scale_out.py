"""Scale-out: augment + tokenize + embed on the default runner and on local Dask clusters of 1 and 2 workers.

Each configuration is one `python -m flows.retrain` run in a fresh workdir (cold feature cache), on the bundled
PhraseBank with two EDA copies per training sentence (so augment has work to do), the backbone frozen and one
training epoch (training is not what is measured). The data steps' wall time comes from summary.json.

The 1-million-sentence estimate is on paper: fitting T(N) = S + P / N (a serial part and a parallel part,
Amdahl) to the 1- and 2-worker times, then scaling linearly by sentence count. On this 2-core machine two
workers share the cores TensorFlow already spreads one worker over, so the fit is a pessimistic lower bound on
what N real machines give.

    .venv/bin/python benchmarks/scale_out.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import table, write_section  # noqa: E402

STEPS = ("augment", "tokenize", "embed")
COMMON = {"data.conflicts": "drop", "augment.n_aug": 2, "train.unfreeze_top": 0, "train.max_epochs": 1}
CONFIGS = {"threads (default)": {}, "dask, 1 worker": {"runner": "dask", "dask.workers": 1},
           "dask, 2 workers": {"runner": "dask", "dask.workers": 2}}


def one_run(name: str, overrides: dict) -> dict:
    """Run the flow once in a fresh workdir; returns the data steps' seconds and sentence counts."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = [arg for key, value in {**COMMON, **overrides}.items() for arg in ("--set", f"{key}={value}")]
        done = subprocess.run([sys.executable, "-m", "flows.retrain", "--workdir", tmp, *sets], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{name}: the run failed\n{done.stderr[-3000:]}")
        summary = json.loads(Path(done.stdout.strip().splitlines()[-1]).read_text())
    seconds = {step: summary["stages"][step]["seconds"] for step in STEPS}
    return {"name": name, "seconds": seconds, "total": sum(seconds.values()), "rows": summary["augment"]["rows_in"],
            "sentences": summary["embed"]["sentences"], "runner": summary["runner"]}


def main() -> None:
    runs = [one_run(name, overrides) for name, overrides in CONFIGS.items()]
    for run in runs:
        print(run, file=sys.stderr)
    base = runs[0]["total"]
    rows = [[r["name"], *(f"{r['seconds'][s]:.1f}" for s in STEPS), f"{r['total']:.1f}",
             f"{r['sentences'] / r['total']:.0f}", f"{base / r['total']:.2f}x"] for r in runs]
    one, two = runs[1]["total"], runs[2]["total"]
    parallel, serial = 2 * (one - two), max(2 * two - one, 0.0)
    per_million = 1e6 / runs[1]["sentences"]
    estimate = [[n, f"{(serial + parallel / n) * per_million / 3600:.1f} h"] for n in (1, 2, 4, 8, 16, 32)]
    body = (
        f"The bundled data ({runs[0]['rows']} rows after de-duplication, {runs[0]['sentences']} sentences after two "
        "EDA copies per training row), cold feature cache, backbone frozen; seconds of each data step from "
        "summary.json (shards and merge included). Command: `.venv/bin/python benchmarks/scale_out.py`.\n\n"
        + table(["runner", *(f"{s} s" for s in STEPS), "data steps s", "sentences/s", "vs default"], rows)
        + f"\n\nFit T(N) = S + P/N to the Dask runs: S = {serial:.1f} s serial (merges, scheduling), P = "
        f"{parallel:.1f} s parallel, for {runs[1]['sentences']} sentences. Paper estimate for 1 million sentences "
        "on N such CPU workers (linear in sentences; the embed step dominates):\n\n"
        + table(["workers", "augment + tokenize + embed"], estimate)
        + "\n\nTwo workers on two cores share the cores one TensorFlow worker already uses, so the measured gain "
        "is small here and the estimate is pessimistic; on separate machines P/N scales with N."
    )
    write_section("scale-out", body)


if __name__ == "__main__":
    main()
