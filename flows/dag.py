"""The retrain DAG, declared once: the steps in order and what each one takes from the config and the steps before.

    validate -> drift -> split -> augment -> tokenize -> embed -> pseudo_label -> finetune -> estimate -> evaluate
    -> gate -> promote

`STEPS` is the definition; `run` executes it, or its beginning (`until="split"`), in one of two ways:
- `ThroughPrefect(step_runner)`: each step as its Prefect task(s) through the `StepRunner` (content-keyed cache,
  retries, shards on Dask, the stage records of summary.json): the retrain flow;
- `Plain(cfg)`: the plain step functions in this process, no Prefect run; they write the same content-addressed
  artifacts, so a later run finds its steps cached: `--validate-only` and the benchmarks.

A step is its stage name (summary.json's `stages.<name>`, the Prefect task names) and its module in tasks/, which
holds the plain function `<name>` and its task `<name>_task`; a data-parallel step also has `<name>_shard_task` and
`<name>_merge_task`, which the Dask runner uses (shards on the workers, then a merge that joins them); the threads
runner runs the step's one task, which reads its input once and writes no shard files. A module is imported when its step first runs, so validation alone does not pay for
importing the training steps.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from core.run.runner import StepRunner
from core.run.summary import Baselines, drift_baselines, lineage
from schemas.config import RetrainConfig


@dataclass(frozen=True)
class Call:
    """A step's arguments, `workdir` excepted (each way of running passes its own)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def call(*args: Any, **kwargs: Any) -> Call:
    """The arguments of one step, written as the call they make."""
    return Call(args, kwargs)


class Inputs:
    """What the steps' arguments are made of: the config, the backbone, drift's baselines, the run id, and the
    results of the steps run so far (`inputs["split"]`). The backbone and the baselines are read when a step
    first needs them."""

    def __init__(self, cfg: RetrainConfig, executor: "Executor", backbone: Any = None):
        self.cfg = cfg
        self.results: dict[str, Any] = {}
        self._executor = executor
        self._backbone = backbone

    def __getitem__(self, step: str) -> Any:
        return self.results[step]

    @functools.cached_property
    def backbone(self) -> Any:
        """The `Backbone` given to `run`, else `model.backbone` resolved (its weights hashed) on first use."""
        if self._backbone is not None:
            return self._backbone
        from core.model.backbone import Backbone

        return Backbone.resolve(self.cfg.model.backbone)

    @functools.cached_property
    def baselines(self) -> Baselines:
        """Drift's baselines, read from the workdir when drift's arguments are built."""
        return self._executor.baselines()

    @functools.cached_property
    def champion_version(self) -> str | None:
        """The current champion's version when self-training needs it (`train.unlabelled`), else None (so the
        step's cache key does not move with the champion when it is off)."""
        if self.cfg.train.unlabelled is None:
            return None
        from core.storage.registry import RegistryError, champion

        try:
            return (champion(self.cfg.workdir, self.cfg.model.name) or {}).get("version")
        except RegistryError:
            return None

    def lineage(self) -> dict[str, Any]:
        """Where the model comes from, with the champion it challenges read now (just before promote)."""
        return lineage(self.cfg, self._executor.run_id, self["validate"])


@dataclass(frozen=True)
class Step:
    """One step: its stage name, its module in tasks/, its arguments, whether it runs as shards and a merge."""

    name: str
    module: str
    arguments: Callable[[Inputs], Call]
    sharded: bool = False

    def _attribute(self, suffix: str) -> Any:
        return getattr(importlib.import_module(self.module), f"{self.name}{suffix}")

    def function(self) -> Callable[..., Any]:
        """The plain step function: `<name>(*args, workdir, **kwargs)`."""
        return self._attribute("")

    def task(self) -> Any:
        """The step's Prefect task: the whole step in one pass (for a data-parallel step, the threads runner's way)."""
        return self._attribute("_task")

    def shard_and_merge_tasks(self) -> tuple[Any, Any]:
        """A sharded step's two Prefect tasks: one run per shard, then the merge."""
        return self._attribute("_shard_task"), self._attribute("_merge_task")


STEPS: tuple[Step, ...] = (
    Step("validate", "tasks.validate", lambda s: call(s.cfg.data)),
    Step("drift", "tasks.drift", lambda s: call(s["validate"], s.baselines.last_run, s.cfg.validate_,
                                                champion_data=s.baselines.champion_data)),
    Step("split", "tasks.split", lambda s: call(s["validate"], s.cfg.split, s.cfg.data.max_train_rows,
                                                s.cfg.data.min_per_class,
                                                min_test_per_class=s.cfg.evaluate.min_test_per_class)),
    Step("augment", "tasks.augment", lambda s: call(s["split"], s.cfg.augment, s.cfg.seed), sharded=True),
    Step("tokenize", "tasks.tokenization", lambda s: call(s["augment"], s.cfg.tokenize, s.backbone), sharded=True),
    Step("embed", "tasks.embed", lambda s: call(s["tokenize"], s.backbone, s.cfg.train.unfreeze_top), sharded=True),
    Step("pseudo_label", "tasks.pseudo_label", lambda s: call(s["embed"], s.cfg.train, s.cfg.data, s.cfg.model.name,
                                                              s.champion_version, s.backbone)),
    Step("finetune", "tasks.finetune", lambda s: call(s["pseudo_label"], s.cfg.train, s.cfg.seed, s.backbone)),
    Step("estimate", "tasks.estimate", lambda s: call(s["pseudo_label"], s["augment"], s["split"], s.cfg.train,
                                                      s.cfg.evaluate, s.cfg.seed, s.backbone)),
    Step("evaluate", "tasks.evaluate", lambda s: call(s["finetune"], s["embed"], s["augment"],
                                                      estimate=s["estimate"])),
    Step("gate", "tasks.gate", lambda s: call(s["evaluate"], s["embed"], s.cfg.gate, s.cfg.model.name, s.backbone,
                                              split=s.cfg.split)),
    Step("promote", "tasks.promote", lambda s: call(s["finetune"], s["evaluate"], s["gate"], s.cfg.model.name,
                                                    s.lineage(), approval=s.cfg.gate.approval)),
)
NAMES = tuple(step.name for step in STEPS)


class Executor(Protocol):
    """A way of running the steps."""

    run_id: str | None

    def baselines(self) -> Baselines:
        """Drift's baselines in the workdir."""

    def __call__(self, step: Step, arguments: Call) -> Any:
        """Run `step` with `arguments`; returns its result (raises what the step raises)."""


class ThroughPrefect:
    """Each step as its Prefect task(s), through the run's `StepRunner`, which records every stage."""

    def __init__(self, runner: StepRunner):
        self.runner = runner
        self.run_id: str | None = runner.run_id

    def baselines(self) -> Baselines:
        return self.runner.baselines()  # the runner keeps the last run's id for summary.json

    def __call__(self, step: Step, arguments: Call) -> Any:
        if step.sharded and self.runner.cfg.runner == "dask":  # threads: one pass, no shard files to join
            if arguments.kwargs:
                raise TypeError(f"sharded step {step.name!r} takes positional arguments only")
            return self.runner.sharded(step.name, *step.shard_and_merge_tasks(), *arguments.args)
        return self.runner.step(step.name, step.task(), *arguments.args, **arguments.kwargs)


class Plain:
    """Each step's plain function in this process (no Prefect run, no cache lookup, no retries)."""

    run_id: str | None = None

    def __init__(self, cfg: RetrainConfig):
        self.cfg = cfg

    def baselines(self) -> Baselines:
        return drift_baselines(self.cfg.workdir, self.cfg.model.name)

    def __call__(self, step: Step, arguments: Call) -> Any:
        return step.function()(*arguments.args, workdir=self.cfg.workdir, **arguments.kwargs)


def run(executor: Executor, cfg: RetrainConfig, *, until: str | None = None, backbone: Any = None) -> Inputs:
    """Run `STEPS` in order with `executor`, up to and including `until` (all of them if None); returns the
    `Inputs`, whose `results` map each step run to its result. `backbone` (a resolved `Backbone`) saves resolving
    it again. Raises ValueError for an unknown `until`, and whatever a step raises."""
    if until is not None and until not in NAMES:
        raise ValueError(f"unknown step {until!r}: one of {', '.join(NAMES)}")
    inputs = Inputs(cfg, executor, backbone)
    for step in STEPS:
        inputs.results[step.name] = executor(step, step.arguments(inputs))
        if step.name == until:
            break
    return inputs
