"""The house rule of the layout (README, "Layout"): flows import steps, steps import the machinery, and
nothing in the machinery (`core/`) or the data contracts (`schemas/`) imports a step or a flow; the DAG is
declared once (flows/dag.py) and names, for each step, the plain function and the tasks that run the same code."""

from __future__ import annotations

from core.storage import versions


def _modules(package: str) -> list[str]:
    root = versions.PROJECT_ROOT / package
    return sorted(".".join(path.relative_to(versions.PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for path in root.rglob("*.py"))


def test_nothing_below_the_steps_imports_a_step_or_a_flow():
    offenders = {}
    for module in _modules("core") + _modules("schemas"):
        path = versions.module_file(module)
        bad = sorted(name for name in versions.imports(path, module) if name.split(".")[0] in ("tasks", "flows"))
        if bad:
            offenders[module] = bad
    assert not offenders, f"machinery importing steps or flows: {offenders}"


def test_every_step_module_holds_a_step():
    """tasks/ is for steps: each module there defines a Prefect task (its thin wrapper) or is a registry
    operation run from flows/registry.py."""
    operations = {"tasks.prune", "tasks.reevaluation", "tasks.approval", "tasks.predict", "tasks.__init__", "tasks"}
    for module in _modules("tasks"):
        if module in operations:
            continue
        source = versions.module_file(module).read_text(encoding="utf-8")
        assert "step_task(" in source, f"{module} is in tasks/ but defines no step"


def test_each_dag_step_runs_the_same_code_as_a_plain_function_and_as_prefect_tasks():
    """Plain (--validate-only, benchmarks) and ThroughPrefect (the flow) run one definition: each step's tasks
    wrap its plain function (the sharded ones: the shard and merge functions the plain one combines), under the
    task names the UI shows and the stage names summary.json keeps."""
    from flows import dag

    assert dag.NAMES == ("validate", "drift", "split", "augment", "tokenize", "embed", "pseudo_label", "finetune", "estimate", "evaluate", "gate",
                         "promote")
    for step in dag.STEPS:
        function = step.function()
        assert callable(function) and "workdir" in function.__code__.co_varnames, step.name
        assert step.task().name == step.name and step.task().fn.__wrapped__ is function
        if step.sharded:  # the Dask runner's pair; the threads runner runs `step.task()` in one pass
            shard, merge = step.shard_and_merge_tasks()
            assert (shard.name, merge.name) == (f"{step.name}_shard", f"{step.name}_merge")


def test_running_until_an_unknown_step_is_refused():
    import pytest

    from flows import dag
    from schemas.config import RetrainConfig

    cfg = RetrainConfig()
    with pytest.raises(ValueError, match="unknown step 'valdiate'"):
        dag.run(dag.Plain(cfg), cfg, until="valdiate")
