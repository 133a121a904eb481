"""Scale-out: augment + tokenize + embed on the default runner and on local Dask clusters of 1 and 2 workers.

Each configuration is one `python -m flows.retrain` run in a fresh workdir (cold feature cache), on the bundled
PhraseBank with two EDA copies per training sentence (so augment has work to do), the backbone frozen and one
training epoch (training is not what is measured). The data steps' wall time comes from summary.json.

The 1-million-sentence estimate is on paper, from the 1-worker Dask run's measured costs per sentence: the
merges are the serial part (they join every shard), the shards the parallel part, so for N workers like this
machine (2 cores each) T(N) = sentences x (merge cost + shard cost / N), Amdahl's law with the measured serial
fraction. Cluster start-up and the per-worker backbone load (seconds, once per run) are left out. On this
2-core machine the 2-worker run cannot be faster than the 1-worker one (TensorFlow already spreads one worker
over both cores): it shows the cost of the extra process, not the scaling.

    .venv/bin/python benchmarks/scale_out.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import run_retrain, table, write_section  # noqa: E402

STEPS = ("augment", "tokenize", "embed")
COMMON = {"data.conflicts": "drop", "augment.n_aug": 2, "train.unfreeze_top": 0, "train.max_epochs": 1}
CONFIGS = {"threads (default)": {}, "dask, 1 worker": {"runner": "dask", "dask.workers": 1},
           "dask, 2 workers": {"runner": "dask", "dask.workers": 2}}


def one_run(name: str, overrides: dict) -> dict:
    """Run the flow once in a fresh workdir; returns the data steps' seconds (and merges') and sentence counts."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = [arg for key, value in {**COMMON, **overrides}.items() for arg in ("--set", f"{key}={value}")]
        _, summary = run_retrain("--workdir", tmp, *sets)
    seconds = {step: summary["stages"][step]["seconds"] for step in STEPS}
    merges = sum(summary["stages"][step].get("merge_seconds", 0.0) for step in STEPS)  # threads: no merge
    return {"name": name, "seconds": seconds, "total": sum(seconds.values()), "merges": merges,
            "rows": summary["augment"]["rows_in"], "sentences": summary["embed"]["sentences"],
            "runner": summary["runner"]}


def main() -> None:
    runs = [one_run(name, overrides) for name, overrides in CONFIGS.items()]
    for run in runs:
        print(run, file=sys.stderr)
    base = runs[0]["total"]
    rows = [[r["name"], *(f"{r['seconds'][s]:.1f}" for s in STEPS), f"{r['merges']:.1f}", f"{r['total']:.1f}",
             f"{r['sentences'] / r['total']:.0f}", f"{base / r['total']:.2f}x"] for r in runs]
    one = runs[1]
    serial, parallel = one["merges"] / one["sentences"], (one["total"] - one["merges"]) / one["sentences"]
    estimate = [[n, f"{1e6 * (serial + parallel / n) / 60:.0f} min", f"{1 / (serial + parallel / n):.0f}"]
                for n in (1, 2, 4, 8, 16, 32)]
    body = (
        f"The bundled data ({runs[0]['rows']} rows after de-duplication, {runs[0]['sentences']} sentences after two "
        "EDA copies per training row), cold feature cache, backbone frozen; seconds of each data step from "
        "summary.json (shards and merge included; the merges' part apart). "
        "Command: `.venv/bin/python benchmarks/scale_out.py`.\n\n"
        + table(["runner", *(f"{s} s" for s in STEPS), "of which merges s", "data steps s", "sentences/s",
                 "vs default"], rows)
        + f"\n\nMeasured per sentence on one Dask worker (2 cores): {1000 * parallel:.2f} ms in shards "
        f"(parallel), {1000 * serial:.3f} ms in merges (serial; a serial fraction of "
        f"{serial / (serial + parallel):.1%}). Paper estimate for 1 million sentences on N such workers, "
        "T(N) = 10^6 x (serial + parallel / N), cluster start-up excluded:\n\n"
        + table(["workers", "augment + tokenize + embed", "sentences/s"], estimate)
        + "\n\nOn this 2-core machine a second worker competes for the cores the first one's TensorFlow already "
        "uses, so the 2-worker row shows the cost of the extra process, not the scaling; Dask's per-task "
        "overhead and each worker's own backbone load make one worker slower than the default runner here."
    )
    write_section("scale-out", body)


if __name__ == "__main__":
    main()
