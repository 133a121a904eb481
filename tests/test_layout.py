"""The house rule of the layout (README, "Layout"): flows import steps, steps import the machinery, and
nothing in the machinery (`core/`) or the data contracts (`schemas/`) imports a step or a flow."""

from __future__ import annotations

from core.storage import caching


def _modules(package: str) -> list[str]:
    root = caching.PROJECT_ROOT / package
    return sorted(".".join(path.relative_to(caching.PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for path in root.rglob("*.py"))


def test_nothing_below_the_steps_imports_a_step_or_a_flow():
    offenders = {}
    for module in _modules("core") + _modules("schemas"):
        path = caching._module_file(module)
        bad = sorted(name for name in caching._imports(path, module) if name.split(".")[0] in ("tasks", "flows"))
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
        source = caching._module_file(module).read_text(encoding="utf-8")
        assert "step_task(" in source, f"{module} is in tasks/ but defines no step"
