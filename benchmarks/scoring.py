"""Scoring at scale: `python -m flows.predict` on 10k and 100k rows with the threads runner and with local Dask
clusters of 1 and 2 workers (time, peak memory), and the threads runner against bare keras-hub on the bundled
sentences.

The model: a champion trained here on 90 bundled sentences with the backbone frozen (scoring runs the whole
backbone and head whatever was trained, so its cost is any default model's). The files: the bundled sentences
repeated in order to N rows (CSV). Each configuration is one command, process start included, as a user runs it;
peak memory is the largest sum of the resident set sizes of the command and all its child processes (Dask's
scheduler, nanny and worker processes, Prefect's temporary API), sampled every 0.2 s with psutil.

From the measured costs, on paper: the per-row scoring cost c (s/row) of the quietest threads run (predict's own
rate) and the rest of that run's time, s0 (process start, model load, the checking pass); N machines like this
one then take T(N) = s0 + rows x c / N (Amdahl, s0 serial). 1M rows is estimated that way when it is not run
(`SIZES`, `SCORING_SIZES=10000,100000,1000000` to run it). Every run is kept in scoring-runs.json with the load
average it started under, and the RESULTS.md section is rendered from all of them.

Every scored file is read back (`check_output`): rows out = rows in, in order, and each repeat of a sentence
scored as its first occurrence.

Throughput against bare keras-hub: the same 4,846 sentences, the threads runner as a command (process start
included) against keras-hub alone in-process on the same backbone (its tokenizer and packer on every sentence, then
`BertBackbone.predict` in batches of 64), one after the other in one run.

    .venv/bin/python benchmarks/scoring.py            (make bench B=scoring)
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import run_retrain, table, write_section  # noqa: E402
from core.storage.artifacts import write_json_atomic  # noqa: E402

BUNDLED = ROOT / "data" / "financial-phrasebank" / "phrasebank.csv"
SIZES = [int(n) for n in os.environ.get("SCORING_SIZES", "10000,100000").split(",")]
CONFIGS = {"threads": {}, "dask, 1 worker": {"runner": "dask", "dask.workers": 1},
           "dask, 2 workers": {"runner": "dask", "dask.workers": 2}}
ONLY = [c.strip() for c in os.environ.get("SCORING_CONFIGS", ";".join(CONFIGS)).split(";")]  # names hold commas
BUNDLED_RUN = os.environ.get("SCORING_BUNDLED", "1") != "0"


def sentences() -> list[str]:
    with open(BUNDLED, encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def write_rows(path: Path, n: int) -> Path:
    texts = sentences()
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(n):
            writer.writerow([i, texts[i % len(texts)]])
    return path


def measured(command: list[str]) -> dict:
    """Run `command`; its wall seconds, exit code, stderr tail and peak RSS (MiB) of its process tree."""
    import psutil

    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        root, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(0.2)
        out = process.stdout.read()
        err.seek(0)
        tail = err.read()[-3000:]
    return {"seconds": time.perf_counter() - started, "rc": process.returncode, "peak_mib": peak / 2**20,
            "stdout": out, "stderr": tail}


def champion(work: Path) -> None:
    """A small frozen-backbone champion in `work` (90 bundled sentences, 2 epochs)."""
    rows = list(csv.DictReader(open(BUNDLED, encoding="utf-8", newline="")))
    taken, picked = {}, []
    for row in rows:
        if taken.get(row["label"], 0) < 30:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            picked.append(row)
    data = work.parent / "train.csv"
    with open(data, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(picked)
    run_retrain("--data", str(data), "--workdir", str(work), "--set", "train.unfreeze_top=0", "--set",
                "train.max_epochs=2", "--set", "augment.n_aug=0", "--set", "data.min_per_class=3", "--set",
                "gate.on_label_change=promote")
    from core import registry

    if registry.champion(work, "default") is None:
        version = registry.versions(work, "default")[-1]["version"]
        registry.promote(work, "default", version, "benchmark")


def check_output(out: Path, n: int) -> dict:
    """The second path on a scored file of `n` rows (the bundled sentences cycled, `write_rows`): rows out = rows
    in, in order (the `id` column, kept as the user's text), and every repeat of a sentence scored as its first
    occurrence wherever its chunk and batch fell. Returns {"row_groups", "repeats", "max_prob_diff"}; raises
    AssertionError on any breach."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == n, f"{out}: {table.num_rows} rows out for {n} in"
    assert table["id"].to_pylist() == [str(i) for i in range(n)], f"{out}: rows out of order"
    probs = np.stack([table[c].to_numpy() for c in table.column_names if c.startswith("prob_")], axis=1)
    k = len(sentences())
    cycles = probs[: n // k * k].reshape(-1, k, probs.shape[1])
    diff = float(np.abs(cycles - cycles[:1]).max()) if len(cycles) else 0.0
    assert diff < 2e-3, f"{out}: a repeated sentence scored {diff:.2g} away from its first occurrence"
    return {"row_groups": pq.ParquetFile(out).num_row_groups, "repeats": len(cycles), "max_prob_diff": diff}


def predict_command(data: Path, out: Path, work: Path, sets: dict) -> list[str]:
    return [sys.executable, "-m", "flows.predict", "--data", str(data), "--out", str(out), "--workdir", str(work),
            *[arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]]


def bare_keras_hub(texts: list[str], sequence_length: int) -> float:
    """Sentences per second of what a user writes with keras-hub alone, in this process (backbone loaded, one warm-up
    batch): the preset's tokenizer and a StartEndPacker on every sentence (padded to the model's sequence length),
    then `BertBackbone.predict` in batches of 64 (the head, one matrix product, is left out)."""
    import keras_hub
    import numpy as np

    from core.model.backbone import Backbone, load_backbone, load_tokenizer, special_ids

    preset = Backbone.resolve(None).path
    tokenizer, backbone = load_tokenizer(preset), load_backbone(preset)
    cls_id, sep_id, pad_id = special_ids(preset)
    packer = keras_hub.layers.StartEndPacker(sequence_length=sequence_length, start_value=cls_id, end_value=sep_id,
                                             pad_value=pad_id, return_padding_mask=True)

    def run(batch: list[str]) -> None:
        ids, mask = packer(tokenizer(batch))
        ids = np.asarray(ids)
        backbone.predict({"token_ids": ids, "padding_mask": np.asarray(mask), "segment_ids": np.zeros_like(ids)},
                         batch_size=64, verbose=0)

    run(texts[:64])
    started = time.perf_counter()
    run(texts)
    return len(texts) / (time.perf_counter() - started)


RUNS = Path(__file__).resolve().parent / "scoring-runs.json"


def record(entry: dict) -> list[dict]:
    """Add one measured configuration to benchmarks/scoring-runs.json (replacing an earlier one of the same
    configuration and size), stamped with the time now, and return them all. Each entry keeps the load average it
    started under, so runs taken on a quiet machine and runs taken beside other work are told apart in the table."""
    from datetime import datetime, timezone

    entry = {**entry, "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")}
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    runs = [r for r in runs if (r["config"], r["rows"]) != (entry["config"], entry["rows"])] + [entry]
    runs.sort(key=lambda r: (r["config"] != "bundled", list(CONFIGS).index(r["config"]) if r["config"] in CONFIGS
                             else -1, r["rows"]))
    write_json_atomic(RUNS, runs)
    return runs


def inside_rate(stderr: str) -> float | None:
    """Sentences per second as predict's own log line reports them (scoring only: no process start, no
    checking pass), or None."""
    found = re.findall(r"\(([\d.]+) sentences/s", stderr)
    return float(found[-1]) if found else None


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "work"
        champion(work)
        for n in SIZES:
            data = write_rows(root / f"rows-{n}.csv", n)
            for name, sets in CONFIGS.items():
                if name not in ONLY or (name != "threads" and n < max(SIZES)):
                    continue  # Dask at the largest size only (the smaller sizes show memory against size)
                load = os.getloadavg()[0]
                run = measured(predict_command(data, root / f"out-{n}.parquet", work, {**sets, "predict.chunk_rows": 4096}))
                if run["rc"] != 0:
                    raise SystemExit(f"{name} on {n} rows failed:\n{run['stderr']}")
                checked = check_output(root / f"out-{n}.parquet", n)
                record({"config": name, "rows": n, "seconds": round(run["seconds"], 1),
                        "peak_mib": round(run["peak_mib"]), "inside_per_s": inside_rate(run["stderr"]),
                        "load": round(load, 1), "checked": checked})
                print(f"{name}, {n:,} rows: {run['seconds']:.1f} s, peak {run['peak_mib']:.0f} MiB", file=sys.stderr)
        if BUNDLED_RUN:  # the bundled sentences: the threads runner as a command against bare keras-hub, back to back
            texts = sentences()
            load = os.getloadavg()[0]
            command = measured(predict_command(BUNDLED, root / "bundled.parquet", work, {}))
            card = json.loads(next((work / "models" / "default" / "versions").glob("*/model.json")).read_text())
            bare = bare_keras_hub(texts, int(card["tokenizer"]["sequence_length"]))
            record({"config": "bundled", "rows": len(texts), "seconds": round(command["seconds"], 1),
                    "peak_mib": round(command["peak_mib"]), "inside_per_s": inside_rate(command["stderr"]),
                    "bare_keras_hub_per_s": round(bare, 1), "load": round(max(load, os.getloadavg()[0]), 1)})
    write_section("scoring", render(json.loads(RUNS.read_text())))


def render(runs: list[dict]) -> str:
    """RESULTS.md's scoring section from every recorded run: the table by runner and size, the bundled
    comparison, and the Amdahl projection from the quietest threads run's per-row cost."""
    rows = [[r["config"], f"{r['rows']:,}", f"{r['seconds']:.1f}", f"{r['rows'] / r['seconds']:.0f}",
             f"{r['inside_per_s']:.0f}" if r.get("inside_per_s") else "-", f"{r['peak_mib']:,}", f"{r['load']:.1f}" + (f" ({r['note']})" if r.get("note") else ""),
             r["when"]] for r in runs if r["config"] != "bundled"]
    body = table(["runner", "rows", "seconds (process start included)", "rows/s", "rows/s inside predict (scoring)",
                  "peak memory MiB (all processes)", "load average at start (2 cores)", "measured (UTC)"], rows)
    for r in (r for r in runs if r["config"] == "bundled"):
        body += (f"\n\nBundled sentences ({r['rows']:,}), back to back in one run ({r['when']} UTC, load average "
                 f"{r['load']:.1f}): `flows.predict` (threads, process start included) {r['seconds']:.1f} s = "
                 f"**{r['rows'] / r['seconds']:.0f} sentences/s**, peak {r['peak_mib']:,} MiB; bare keras-hub "
                 f"(tokenizer + packer + `BertBackbone.predict` in batches of 64, in-process, model loaded and warm) "
                 f"{r['bare_keras_hub_per_s']:.0f} sentences/s.")
    threads = sorted((r for r in runs if r["config"] == "threads" and r.get("inside_per_s")), key=lambda r: r["load"])
    if threads:  # per-row cost c from the quietest threads run's scoring rate; the rest of its time is s0
        q = threads[0]
        c = 1 / q["inside_per_s"]
        s0 = q["seconds"] - q["rows"] * c
        body += (f"\n\nProjection from the quietest threads run ({q['rows']:,} rows, load {q['load']:.1f}): "
                 f"{c * 1000:.2f} ms a row scoring, s0 = {s0:.0f} s for process start, model load and the checking "
                 f"pass; 1,000,000 rows T = s0 + rows x c = {(s0 + 1e6 * c) / 60:.0f} min on one such machine, "
                 "and with the rows dealt out to N such machines (Amdahl: s0 serial, the scoring parallel) "
                 + ", ".join(f"N={k}: {(s0 + 1e6 * c / k) / 60:.0f} min" for k in (2, 4, 8)) + ".")
    return body


if __name__ == "__main__":
    main()
