"""The structure the project promises, checked on the source: imports go one way
(drivers <- edge <- hil <- tools), no import cycles, no product module over 400 lines, role
knowledge stays in the role modules, and the tree stands alone (no pointers outside it)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("drivers", "edge", "hil", "tools")
LAYER = {name: i for i, name in enumerate(PACKAGES)}  # a package imports only lower ones
MAX_LINES = 400
ROLE_NAMES = {"pv", "battery", "meter", "load", "dcdc"}
ROLE_MODELS = {"PvDevice", "BatteryDevice", "MeterDevice", "FlexLoadDevice",
               "DcConverterDevice"}
# Where role knowledge belongs: the role modules, the drivers that implement a role over a
# protocol (and the registry choosing them), and the simulators' per-role modules.
ROLE_HOMES = ("edge/roles/", "drivers/", "hil/devices/")
# Modules that still branch on a concrete role, and why they must.
ROLE_BRANCH_ALLOWED = {
    # The rule-based replay simulates each role's physics itself (no Modbus, no HIL).
    "tools/simulate/replay.py",
}
# The command line imports the simulator and the offline tools inside its command functions.
LAZY_ENTRY = {"edge/cli/__init__.py", "edge/cli/common.py", "edge/cli/daemon.py",
              "edge/cli/offline.py"}


def product_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules `path` imports (absolute names); `top_level_only` leaves out imports inside
    functions and `if TYPE_CHECKING:` blocks, which do not run when the module loads."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and (isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                                   or _type_checking(child)):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child)

    visit(tree(path))
    return found


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    for path in product_modules():
        own = rel(path).split("/")[0]
        lazy_ok = rel(path) in LAZY_ENTRY
        for name in imports(path, top_level_only=lazy_ok):
            top = name.split(".")[0]
            if top in LAYER and LAYER[top] > LAYER[own]:
                wrong.append(f"{rel(path)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    modules = {module_name(p): p for p in product_modules()}
    graph = {m: {n for n in imports(p, top_level_only=True) if n in modules and n != m}
             for m, p in modules.items()}
    cycles, state = [], {}

    def walk(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(" -> ".join([*stack[stack.index(n):], n]))
            elif n not in state:
                walk(n, [*stack, n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert not cycles, "\n".join(cycles)


def test_no_product_module_is_over_400_lines():
    big = [f"{rel(p)}: {n}" for p in product_modules()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not big, "\n".join(big)


ROLE_MAPS = {"ROLES", "groups", "setpoints", "roles"}  # what is keyed by role name


def _name(node: ast.AST) -> str | None:
    return getattr(node, "id", None) or getattr(node, "attr", None)


def _role_branches(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            if any(getattr(n, "id", None) in ROLE_MODELS for n in ast.walk(node.args[1])):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            on_role = any(isinstance(s, ast.Attribute) and s.attr == "role" for s in sides)
            names = {c.value for s in sides for c in ast.walk(s) if isinstance(c, ast.Constant)}
            if on_role and names & ROLE_NAMES:
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _name(node.value) in ROLE_MAPS:
            if isinstance(node.slice, ast.Constant) and node.slice.value in ROLE_NAMES:
                lines.append(node.lineno)  # ROLES["pv"], setpoints["battery"] ...
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("get", "of")
              and _name(node.func.value) in ROLE_MAPS | {"cap", "capability"}):
            first = node.args[0] if node.args else None  # setpoints.get("battery"), cap.of("pv")
            if isinstance(first, ast.Constant) and first.value in ROLE_NAMES:
                lines.append(node.lineno)
    return lines


def test_role_knowledge_stays_in_the_role_modules():
    outside = {rel(p): lines for p in product_modules()
               if not rel(p).startswith(ROLE_HOMES) and (lines := _role_branches(p))}
    unexpected = {k: v for k, v in outside.items() if k not in ROLE_BRANCH_ALLOWED}
    assert not unexpected, f"concrete-role branches outside edge/roles: {unexpected}"


def test_the_branch_detector_sees_a_role_branch(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(d, groups, cap):\n    if d.role == 'battery':\n        return 1\n"
                      "    return isinstance(d, PvDevice) or groups['load'] or cap.of('pv')\n")
    tree.cache_clear()
    assert sorted(_role_branches(sample)) == [2, 4, 4, 4]


SIM_SETTINGS = {"SimParams", "HilConfig", "SIM_SUNSPEC_MODELS"}  # hil/config.py's


def test_edge_leaves_the_simulators_settings_to_the_simulator():
    """edge carries `sim:` and `hil:` as opaque mappings: no module under edge/ defines or
    names the simulator's settings models (the command line reads them through hil)."""
    hits = [f"{rel(p)}:{node.lineno} {name}" for p in product_modules()
            if rel(p).startswith("edge/") for node in ast.walk(tree(p))
            if (name := _defined_or_named(node)) in SIM_SETTINGS]
    assert not hits, "\n".join(hits)


def _defined_or_named(node: ast.AST) -> str | None:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name
    if isinstance(node, ast.alias):
        return node.name.rsplit(".", 1)[-1]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value  # in __all__ or a lazy-attribute table
    return _name(node)


def test_the_settings_detector_sees_a_definition_and_a_use(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from hil.config import SimParams as S\nclass HilConfig: ...\n"
                      "x = cfg.SIM_SUNSPEC_MODELS\n__all__ = ['SimParams']\n")
    found = {n for node in ast.walk(tree(sample)) if (n := _defined_or_named(node)) in SIM_SETTINGS}
    assert found == SIM_SETTINGS


# Spelled in two parts so that this file does not match itself.
@pytest.mark.parametrize("pattern", ["DOMAIN" + ".md", ".." + "/shared"])
def test_the_tree_points_nowhere_outside_itself(pattern):
    texts = [*product_modules(), *ROOT.glob("docs/*.md"), ROOT / "README.md",
             *ROOT.glob("configs/*.yaml"), *(ROOT / "tests").rglob("*.py")]
    hits = [rel(p) for p in texts if p != Path(__file__) and pattern in p.read_text("utf-8")]
    assert not hits
