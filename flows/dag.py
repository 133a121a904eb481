"""The retrain DAG, written once as the function `pipeline`: each step called by name, with named results.

    validate -> drift -> split -> augment -> tokenize -> embed -> pseudo_label -> finetune -> estimate -> evaluate
    -> gate -> promote

`pipeline(steps, cfg)` reads as the DAG: where a step's inputs come from is the line that calls it. How each
step runs is the `steps` argument, one of two:
- the run's `StepRunner` (core/run/runner.py): each step as its Prefect task (content-keyed cache, retries,
  shards on Dask with `runner=dask`, the stage records of summary.json): the retrain flow;
- `PlainSteps(cfg)`: the plain step functions in this process, no Prefect run; they write the same
  content-addressed artifacts, so a later run finds its steps cached: `--validate-only` and the benchmarks.

`run(steps, cfg, until="split")` runs the beginning only. The training steps are imported inside `pipeline`
after split, so validation alone (`--validate-only`) does not pay for importing TensorFlow and Keras.
"""

from __future__ import annotations

from typing import Any, Protocol

from core.run.sharding import ShardedStep
from core.run.summary import Baselines, drift_baselines, lineage
from schemas.config import RetrainConfig
from tasks.drift import drift_task
from tasks.split import split_task
from tasks.validate import validate_task

# The stage names in the order `pipeline` runs them (summary.json's `stages`, the Prefect task names);
# tests/test_layout.py checks that `pipeline` calls its steps in this order.
NAMES = ("validate", "drift", "split", "augment", "tokenize", "embed", "pseudo_label", "finetune", "estimate",
         "evaluate", "gate", "promote")


class Steps(Protocol):
    """A way of running the steps: the `StepRunner` (Prefect tasks) or `PlainSteps` (plain functions)."""

    run_id: str | None
    results: dict[str, Any]  # stage name -> the result of each step run so far

    def run(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the step `task` (a `step_task`) with these arguments (`workdir` is added); returns its result."""

    def sharded(self, step: ShardedStep, *args: Any) -> Any:
        """Run a data-parallel step (its shards and merge on Dask, else its one task); returns its result."""

    def baselines(self) -> Baselines:
        """Drift's baselines in the workdir (the last successful run's data, the champion's)."""


def pipeline(steps: Steps, cfg: RetrainConfig, backbone: Any = None) -> dict[str, Any]:
    """The retrain DAG: run every step with `steps`, each on the results of the steps before it and its own
    section of `cfg`; returns `steps.results` (stage name -> result). `backbone` (a resolved `Backbone`) saves
    resolving `cfg.model.backbone` again. Raises whatever a step raises."""
    validated = steps.run(validate_task, cfg.data)
    baselines = steps.baselines()
    steps.run(drift_task, validated, baselines.last_run, cfg.validate_, champion_data=baselines.champion_data)
    split = steps.run(split_task, validated, cfg.split, cfg.data.max_train_rows, cfg.data.min_per_class,
                      min_test_per_class=cfg.evaluate.min_test_per_class)

    from core.model.backbone import Backbone  # the training steps: imported only when a run goes past split
    from core.model.fitting import trained_blocks
    from tasks.augment import augment_sharded
    from tasks.embed import embed_sharded
    from tasks.estimate import estimate_task
    from tasks.evaluate import evaluate_task
    from tasks.finetune import finetune_task
    from tasks.gate import gate_task
    from tasks.promote import promote_task
    from tasks.pseudo_label import pseudo_label_task
    from tasks.tokenization import tokenize_sharded

    augmented = steps.sharded(augment_sharded, split, cfg.augment, cfg.seed)
    backbone = backbone if backbone is not None else Backbone.resolve(cfg.model.backbone)
    tokenized = steps.sharded(tokenize_sharded, augmented, cfg.tokenize, backbone)
    blocks = trained_blocks(cfg.train, split.meta)  # the regime's own: the frozen bottom is stored below them
    embedded = steps.sharded(embed_sharded, tokenized, backbone, blocks)
    training = steps.run(pseudo_label_task, embedded, cfg.train, cfg.data, cfg.model.name, champion_version(cfg),
                         backbone)
    model = steps.run(finetune_task, training, cfg.train, cfg.seed, backbone)
    estimate = steps.run(estimate_task, training, augmented, split, cfg.train, cfg.evaluate, cfg.seed, backbone)
    evaluation = steps.run(evaluate_task, model, embedded, augmented, estimate=estimate)
    decision = steps.run(gate_task, evaluation, embedded, cfg.gate, cfg.model.name, backbone, split=cfg.split)
    steps.run(promote_task, model, evaluation, decision, cfg.model.name, lineage(cfg, steps.run_id, validated),
              approval=cfg.gate.approval)  # lineage read now, with the champion this model challenges
    return steps.results


def champion_version(cfg: RetrainConfig) -> str | None:
    """The current champion's version when self-training needs it (`train.unlabelled`), else None (so that
    pseudo_label's cache key does not move with the champion when it is off)."""
    if cfg.train.unlabelled is None:
        return None
    from core.registry import RegistryError, champion

    try:
        return (champion(cfg.workdir, cfg.model.name) or {}).get("version")
    except RegistryError:
        return None


class PlainSteps:
    """Each step's plain function in this process (no Prefect run, no cache lookup, no retries, no shards)."""

    run_id: str | None = None

    def __init__(self, cfg: RetrainConfig):
        self.cfg = cfg
        self.results: dict[str, Any] = {}
        self.reference_run_id: str | None = None

    def run(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function that `task` wraps (`step_task` keeps it as `task.fn.__wrapped__`)."""
        self.results[task.name] = result = task.fn.__wrapped__(*args, workdir=self.cfg.workdir, **kwargs)
        return result

    def sharded(self, step: ShardedStep, *args: Any) -> Any:
        """A data-parallel step in one pass: its whole-table function."""
        return self.run(step.whole, *args)

    def baselines(self) -> Baselines:
        found = drift_baselines(self.cfg.workdir, self.cfg.model.name)
        self.reference_run_id = found.last_run_id
        return found


class _Reached(Exception):
    """Raised by `_Until` once the last step asked for has run."""


class _Until:
    """`steps`, stopping the pipeline (`_Reached`) after the step `until`."""

    def __init__(self, steps: Steps, until: str):
        self.steps, self.until = steps, until
        self.run_id = steps.run_id
        self.results = steps.results

    def _stop_after(self, name: str, result: Any) -> Any:
        if name == self.until:
            raise _Reached
        return result

    def run(self, task: Any, *args: Any, **kwargs: Any) -> Any:
        return self._stop_after(task.name, self.steps.run(task, *args, **kwargs))

    def sharded(self, step: ShardedStep, *args: Any) -> Any:
        return self._stop_after(step.name, self.steps.sharded(step, *args))

    def baselines(self) -> Baselines:
        return self.steps.baselines()


def run(steps: Steps, cfg: RetrainConfig, *, until: str | None = None, backbone: Any = None) -> dict[str, Any]:
    """`pipeline` with `steps`, up to and including the step `until` (all of them if None); returns the results
    of the steps run (stage name -> result). Raises ValueError for an unknown `until`, and whatever a step raises."""
    if until is None:
        return pipeline(steps, cfg, backbone)
    if until not in NAMES:
        raise ValueError(f"unknown step {until!r}: one of {', '.join(NAMES)}")
    try:
        pipeline(_Until(steps, until), cfg, backbone)
    except _Reached:
        pass
    return steps.results
