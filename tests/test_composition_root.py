"""Only the daemon builds the gateway: no part imports gateway.daemon, and the parts import each other in no circle."""

from __future__ import annotations

from pathlib import Path

from tests.core.test_layering import imports_of

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"
ALLOWED = ("gateway.daemon", "gateway.cli")  # the composition root, and the command that starts it


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    """Module -> the gateway modules it imports (typing-only imports included)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            owner = imported
            while owner and owner not in modules:  # gateway.codec.hdlc.HdlcFrame -> gateway.codec.hdlc
                owner = owner.rpartition(".")[0]
            if owner and owner != name:
                targets.add(owner)
        edges[name] = targets
    return edges


def daemon_importers(edges: dict[str, set[str]]) -> list[str]:
    return sorted(name for name, targets in edges.items()
                  if "gateway.daemon" in targets and not name.startswith(ALLOWED))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle a depth-first walk meets, each as the path that closes it."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    found: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                found.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return found


def test_no_part_imports_the_daemon() -> None:
    assert daemon_importers(graph()) == []


def test_modules_import_each_other_in_no_circle() -> None:
    assert circles(graph()) == []


def test_the_checks_find_what_they_look_for() -> None:
    made_up = {"gateway.a": {"gateway.b"}, "gateway.b": {"gateway.a", "gateway.daemon"},
               "gateway.daemon": {"gateway.a"}, "gateway.cli.main": {"gateway.daemon"}}
    assert daemon_importers(made_up) == ["gateway.b"]
    assert ["gateway.a", "gateway.b", "gateway.a"] in circles(made_up)
