"""The house rule of the layout (README, "Layout"): imports go down only, flows -> tasks -> core -> schemas, and
inside core/ from floor to floor (FLOORS); a step never imports another step; flows/ finds no function by name
(no importlib); the DAG is written once (flows/dag.py: pipeline) and names each step's task in code."""

from __future__ import annotations

from core.storage import versions


def _modules(package: str) -> list[str]:
    root = versions.PROJECT_ROOT / package
    return sorted(".".join(path.relative_to(versions.PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for path in root.rglob("*.py"))


# core/'s folders, lowest first: a module imports from its own floor or the ones below, never above. The root
# (errors, faults, metrics) holds what every floor uses.
FLOORS = ("core", "core.text", "core.storage", "core.model", "core.registry", "core.reports", "core.run")
LEVELS = ("schemas", "core", "tasks", "flows")


def _project_imports(module: str) -> list[str]:
    path = versions.module_file(module)
    return sorted(name for name in versions.imports(path, module)
                  if name.split(".")[0] in LEVELS and versions.module_file(name) is not None)


def _floor(module: str) -> int:
    parts = module.split(".")
    folder = ".".join(parts[:2]) if len(parts) > 2 or (versions.PROJECT_ROOT / "core" / parts[-1]).is_dir() else "core"
    return FLOORS.index(folder) if folder in FLOORS else 0


def test_imports_go_down_only():
    """flows -> tasks -> core -> schemas: no module imports from a level above its own."""
    offenders = {}
    for level, package in enumerate(LEVELS):
        for module in _modules(package):
            up = [name for name in _project_imports(module) if LEVELS.index(name.split(".")[0]) > level]
            if up:
                offenders[module] = up
    assert not offenders, f"imports going up: {offenders}"


def test_schemas_import_nothing_from_core():
    offenders = {m: bad for m in _modules("schemas") if (bad := [n for n in _project_imports(m) if n.startswith("core")])}
    assert not offenders, f"data contracts reaching into the machinery: {offenders}"


def test_core_floors_import_downward_only():
    """Inside core/, a sub-folder imports only from its own floor or lower ones (FLOORS): no cycles between
    core's folders, and each can be read knowing only what lies below it."""
    assert {path.name for path in (versions.PROJECT_ROOT / "core").iterdir() if path.is_dir()
            and path.name != "__pycache__"} == {floor.split(".")[1] for floor in FLOORS[1:]}, "a new core/ folder: give it a floor"
    offenders = {}
    for module in _modules("core"):
        up = [name for name in _project_imports(module) if name.startswith("core") and _floor(name) > _floor(module)]
        if up:
            offenders[module] = up
    assert not offenders, f"core/ importing a floor above its own: {offenders}"


def test_a_step_never_imports_another_step():
    offenders = {}
    for module in _modules("tasks"):
        others = [name for name in _project_imports(module) if name.startswith("tasks.") and name != module]
        if others:
            offenders[module] = others
    assert not offenders, f"steps leaning on steps (move what they share to core/ or schemas/): {offenders}"


def test_flows_find_no_function_by_name():
    offenders = [m for m in _modules("flows") if "importlib" in versions.imports(versions.module_file(m), m)]
    assert not offenders, f"importlib in flows/: {offenders}"


def test_nothing_below_the_steps_imports_a_step_or_a_flow():
    offenders = {}
    for module in _modules("core") + _modules("schemas"):
        path = versions.module_file(module)
        bad = sorted(name for name in versions.imports(path, module) if name.split(".")[0] in ("tasks", "flows"))
        if bad:
            offenders[module] = bad
    assert not offenders, f"machinery importing steps or flows: {offenders}"


def test_every_step_module_holds_a_step():
    """tasks/ is for steps: each module there defines a Prefect task (its thin wrapper), or is the predict flow's
    step (tasks.predict: scored in chunks, never cached)."""
    operations = {"tasks.predict", "tasks.__init__", "tasks"}
    for module in _modules("tasks"):
        if module in operations:
            continue
        source = versions.module_file(module).read_text(encoding="utf-8")
        assert "step_task(" in source, f"{module} is in tasks/ but defines no step"


def _pipeline_steps() -> list[str]:
    """The names of the tasks that `flows.dag.pipeline` hands to `steps.run` / `steps.sharded`, in source order."""
    import ast
    import inspect

    from flows import dag

    calls = [node for node in ast.walk(ast.parse(inspect.getsource(dag.pipeline)))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "steps"
             and node.func.attr in ("run", "sharded")]
    return [call.args[0].id for call in sorted(calls, key=lambda call: (call.lineno, call.col_offset))]


def test_each_dag_step_runs_the_same_code_as_a_plain_function_and_as_prefect_tasks():
    """Plain (--validate-only, benchmarks) and the StepRunner (the flow) run one definition, `dag.pipeline`, which
    names each step's task in code: each task wraps its plain function (the sharded ones: the shard and merge
    functions the plain one combines), under the task names the UI shows and the stage names summary.json keeps,
    in the order of `dag.NAMES`."""
    import importlib

    from flows import dag

    assert dag.NAMES == ("validate", "drift", "split", "augment", "tokenize", "embed", "pseudo_label", "finetune", "estimate", "evaluate", "gate",
                         "promote")
    names = _pipeline_steps()
    steps = []
    for name in names:  # each is imported by `pipeline` from its step module in tasks/
        module = "tasks.tokenization" if name.startswith("tokenize") else f"tasks.{name.removesuffix('_task').removesuffix('_sharded')}"
        steps.append(getattr(importlib.import_module(module), name))
    assert [step.name for step in steps] == list(dag.NAMES)
    for step in steps:
        task = getattr(step, "whole", step)
        function = task.fn.__wrapped__
        assert callable(function) and "workdir" in function.__code__.co_varnames, step.name
        assert task.name == step.name
        if task is not step:  # sharded: the Dask runner's pair; the threads runner runs `step.whole` in one pass
            assert (step.shard.name, step.merge.name) == (f"{step.name}_shard", f"{step.name}_merge")


def test_running_until_an_unknown_step_is_refused():
    import pytest

    from flows import dag
    from schemas.config import RetrainConfig

    cfg = RetrainConfig()
    with pytest.raises(ValueError, match="unknown step 'valdiate'"):
        dag.run(dag.PlainSteps(cfg), cfg, until="valdiate")


def test_a_version_folders_file_names_are_spelt_once():
    """The names of a version's files live in core/model/classifier.py (what finetune and evaluate write) and
    core/registry/version.py (`Version`, the rest): everyone else asks `Version` (or those constants)."""
    import ast

    names = {"model.keras", "model.json", "metrics.json", "predictions.parquet", "lineage.json", "saved_model",
             "report.html", "reevaluations"}
    owners = {"core.model.classifier", "core.registry.version"}
    offenders = {}
    for module in _modules("flows") + _modules("tasks") + _modules("core") + _modules("schemas"):
        if module in owners:
            continue
        tree = ast.parse(versions.module_file(module).read_text(encoding="utf-8"))
        found = sorted({node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names})
        if found:
            offenders[module] = found
    assert not offenders, f"a version's file names spelt outside Version: {offenders}"
