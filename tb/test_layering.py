"""The source tree's layers, checked from the imports of every file.

Dependencies run one way: ``model`` (the golden model and its oracles) <- ``rtl`` (the engine)
<- ``examples`` (the demo networks) <- ``sim`` (host side: driver, backends, ONNX import,
command line, flows) <- ``tb`` (testbenches). A module, tests included, imports only from its
own layer or lower ones; and no chain of imports (also those inside functions) comes back to
where it started.

Test code is every ``test_*`` module, every ``testing`` module (a layer's test support, like
``numpy.testing``: helpers its tests and higher layers' tests share), every ``conftest`` and
all of ``tb``. Nothing but test code imports test code, and no module imports a ``test_*``
module: what tests share lives in a ``testing`` module (or, in ``tb``, a module of its own).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Top-level package -> layer; a package may import from its own layer and lower ones.
LAYERS = {"model": 0, "rtl": 1, "examples": 2, "sim": 3, "tb": 4}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_test_module(module: str) -> bool:
    """A module of tests (pytest collects it), as opposed to test support."""
    return module.rsplit(".", 1)[-1].startswith("test_")


def is_test(module: str) -> bool:
    """Test code: tests, test support (``testing``, ``conftest``) and all of ``tb``."""
    last = module.rsplit(".", 1)[-1]
    return (is_test_module(module) or last in ("testing", "conftest")
            or module.split(".")[0] == "tb")


def source_modules(root: Path) -> dict:
    """Module name -> file, for every Python file of the layered packages under ``root``."""
    found = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path, root)] = path
    return found


def imports(module: str, path: Path, known) -> list:
    """``(imported module, line)`` for every import of a module in ``known`` in the file,
    also those inside functions; ``from package import name`` counts as the submodule when
    ``package.name`` is one, else as the package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            # "import a.b.c" names the deepest known module on the path
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and (name, node.lineno) not in found:
                found.append((name, node.lineno))
    return found


def import_graph(root: Path) -> dict:
    """Module -> [(imported module, line)] over the layered packages."""
    files = source_modules(root)
    return {module: imports(module, path, files) for module, path in files.items()}


def layer_violations(graph: dict) -> list:
    """Imports that point to a higher layer, into test code from outside it, or into a module
    of tests."""
    bad = []
    for module, targets in graph.items():
        for target, line in targets:
            mine, theirs = LAYERS[module.split(".")[0]], LAYERS[target.split(".")[0]]
            if theirs > mine:
                bad.append(f"{module}:{line} imports {target} from a higher layer")
            elif is_test(target) and not is_test(module):
                bad.append(f"{module}:{line} is not a test but imports {target}")
            elif is_test_module(target):
                bad.append(f"{module}:{line} imports the tests {target} "
                           f"(shared test code belongs in a testing module)")
    return bad


def cycles(graph: dict) -> list:
    """Every import cycle, as the list of its modules (Tarjan's strongly connected parts)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target, _ in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == module:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_import_from_a_higher_layer():
    bad = layer_violations(import_graph(ROOT))
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    found = cycles(import_graph(ROOT))
    assert not found, "\n".join(" <-> ".join(part) for part in found)


def reachable(graph: dict, start: str) -> set:
    """Every module ``start`` imports, directly or not, and ``start`` itself."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [target for target, _ in graph.get(module, ())]
    return seen


def test_the_command_line_runs_no_testbench_code():
    """What `convcore` imports, directly or not, has no test module, no testing module and
    nothing of tb."""
    seen = reachable(import_graph(ROOT), "sim.cli")
    assert "sim.run_layers" in seen and "sim.engine_driver" in seen
    assert not [m for m in seen if is_test(m)], sorted(m for m in seen if is_test(m))


@pytest.fixture
def tree(tmp_path):
    """A small tree of the same packages to show that the checks can fail."""
    def write(path, text=""):
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    for package in LAYERS:
        write(f"{package}/__init__.py")
    return tmp_path, write


def test_checks_find_upward_imports_test_imports_and_cycles(tree):
    root, write = tree
    write("model/quant.py", "def f():\n    from sim import cli\n")      # upward, in a function
    write("rtl/engine.py", "from model.quant import f\nfrom .regs import R\n")
    write("rtl/regs.py", "import rtl.engine\n")                         # a cycle
    write("sim/cli.py", "from ..tb import test_engine\n")                # upward, relative
    write("sim/plan.py", "from sim.test_plan import x\n")                # a test from product
    write("sim/test_plan.py", "import numpy\nx = 1\n")                   # fine
    write("tb/test_engine.py", "from sim import plan\n")                 # fine
    write("model/testing.py", "from model import quant\n")              # fine
    write("model/test_quant.py", "from model.testing import f\n")        # fine
    write("model/test_pool.py", "from model.test_quant import g\n")      # a test from a test
    write("sim/testing.py", "from model.testing import f\n")            # fine
    write("sim/conftest.py", "from sim import testing\n")               # fine
    write("sim/test_cli.py", "from sim.testing import f\n")              # fine
    write("sim/bench.py", "def run():\n    from .testing import f\n")  # testing from product
    write("rtl/weights.py", "from model import testing\n")             # testing from product
    write("rtl/dsp.py", "from sim import conftest\n")                  # upward, and test code
    graph = import_graph(root)
    assert graph["rtl.engine"] == [("model.quant", 1), ("rtl.regs", 2)]
    assert graph["sim.bench"] == [("sim.testing", 2)]
    assert sorted(layer_violations(graph)) == [
        "model.quant:2 imports sim.cli from a higher layer",
        "model.test_pool:1 imports the tests model.test_quant "
        "(shared test code belongs in a testing module)",
        "rtl.dsp:1 imports sim.conftest from a higher layer",
        "rtl.weights:1 is not a test but imports model.testing",
        "sim.bench:2 is not a test but imports sim.testing",
        "sim.cli:1 imports tb.test_engine from a higher layer",
        "sim.plan:1 is not a test but imports sim.test_plan",
    ]
    assert cycles(graph) == [["rtl.engine", "rtl.regs"]]


def test_command_line_check_finds_testing_modules(tree):
    """The entry point's check sees a testing module reached through product code, also from
    inside a function."""
    root, write = tree
    write("sim/cli.py", "from sim import plan\n")
    write("sim/plan.py", "def table():\n    from sim.testing import f\n")
    write("sim/testing.py", "from model import testing\n")
    write("model/testing.py", "")
    seen = reachable(import_graph(root), "sim.cli")
    assert sorted(m for m in seen if is_test(m)) == ["model.testing", "sim.testing"]
    assert not is_test("sim.plan") and is_test("tb.axis") and is_test("tb.conftest")
