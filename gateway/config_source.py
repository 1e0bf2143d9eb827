"""Reading a TOML configuration so that every mistake names its key and its line.

tomllib keeps no positions, so ``SourceLines`` finds each key's line in the text itself;
``Problems`` collects every mistake of a file (one loader, one format: key, line, message);
``build_table`` turns one TOML table into a frozen dataclass, telling ``Problems`` what is wrong
and standing in a placeholder so that the rest of the file is still checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar, get_args, get_origin, get_type_hints


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake in a configuration file: the key it is about, its line, and what is wrong."""

    key: str  # 'links[0].baudrate', 'links[0]' for a whole table, '' for the whole file
    line: int | None
    message: str
    text: str  # the sentence a person reads, key and line included

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "line": self.line, "message": self.message}


class ConfigError(Exception):
    """A configuration file we refuse to run with: every problem found in it, in the order of the file."""

    def __init__(self, problems: str | list[ConfigProblem], *, file: str = "") -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(key="", line=None, message=problems, text=problems)]
        self.problems = problems
        self.file = file
        prefix = f"{file}: " if file else ""
        super().__init__("\n".join(prefix + problem.text for problem in problems))

_T = TypeVar("_T")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?")
_KEY_PATH = r"[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'"
_DOTTED_KEY = rf"(?:{_KEY_PATH})(?:\s*\.\s*(?:{_KEY_PATH}))*"
_ASSIGNMENT = re.compile(rf"^\s*({_DOTTED_KEY})\s*=\s*(.*)$")
_INLINE_KEY = re.compile(rf"(?:^|[{{,])\s*({_DOTTED_KEY})\s*=")
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'")
_INLINE_TABLE = re.compile(r"\{[^{}]*\}")
ARRAY_TABLES = ("links", "meshes", "meters", "scan", "push", "dial_out", "poller.groups")


def _parts(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(_KEY_PATH, dotted)]


class SourceLines:
    """Finds the line of a key in the TOML text (tomllib keeps no positions).

    Knows [tables], [[arrays of tables]], dotted keys (a.b = 1), inline tables (t = {a = 1})
    and arrays of inline tables (t = [{a = 1}, {a = 2}], over several lines too).
    """

    def __init__(self, text: str) -> None:
        self._keys: dict[tuple[str, int, str], int] = {}  # (table, index, key) -> first line
        table, counts = "", dict[str, int]()
        index = 0
        array: tuple[str, int] | None = None  # an array of inline tables still open: (its table, depth)
        array_index = -1
        for number, line in enumerate(text.splitlines(), start=1):
            bare = _STRING.sub('""', line).split("#", 1)[0]  # strings out first: they may hold a '#'
            if array is not None:
                array_index = self._inline_tables(array[0], array_index, bare, number)
                depth = array[1] + bare.count("[") - bare.count("]")
                array = (array[0], depth) if depth > 0 else None
                continue
            if header := _HEADER.match(line):
                table = ".".join(_parts(header.group(2)))
                index = counts.get(table, -1) + 1 if header.group(1) == "[[" else 0
                counts[table] = index
                self._note(table, index, "", number)
                continue
            assignment = _ASSIGNMENT.match(line)
            if not assignment:
                continue
            parts = _parts(assignment.group(1))
            owner = self._dotted(table, index, parts, number)
            value = bare.partition("=")[2].strip()
            if value.startswith("{"):
                self._inline_keys(owner, 0, value, number)
            elif value.startswith("[") and ("{" in value or value == "["):
                array_index = self._inline_tables(owner, -1, value[1:], number)
                depth = value.count("[") - value.count("]")
                array = (owner, depth) if depth > 0 else None

    def _note(self, table: str, index: int, key: str, number: int) -> None:
        self._keys.setdefault((table, index, key), number)

    def _dotted(self, table: str, index: int, parts: list[str], number: int) -> str:
        """Record a.b.c = ... in table: a, a.b and a.b.c each have this line; returns the table a.b.c names."""
        owner = table
        for depth, part in enumerate(parts):
            self._note(owner, index if depth == 0 else 0, part, number)
            if depth < len(parts) - 1:
                self._note(f"{owner}.{part}".lstrip("."), 0, "", number)
            owner = f"{owner}.{part}".lstrip(".")
        return owner

    def _inline_keys(self, table: str, index: int, text: str, number: int) -> None:
        for key in _INLINE_KEY.finditer(text):
            self._dotted_in(table, index, _parts(key.group(1)), number)

    def _dotted_in(self, table: str, index: int, parts: list[str], number: int) -> None:
        self._note(table, index, parts[0], number)
        for depth in range(1, len(parts)):
            self._note(".".join([table, *parts[:depth]]), 0, parts[depth], number)

    def _inline_tables(self, table: str, index: int, text: str, number: int) -> int:
        for inline in _INLINE_TABLE.finditer(text):
            index += 1
            self._note(table, index, "", number)
            self._inline_keys(table, index, inline.group(0), number)
        return index

    def find(self, table: str, index: int, key: str) -> int | None:
        return self._keys.get((table, index, key))


def key_name(table: str, index: int | None, key: str) -> str:
    """'links[0].baudrate', 'wan.port', 'poller.mqtt.qos'."""
    owner = f"{table}[{index}]" if index is not None and table in ARRAY_TABLES else table
    return f"{owner}.{key}".strip(".")


class Problems:
    """Collects every problem of one file, each with its key and line (one loader, one format)."""

    def __init__(self, lines: SourceLines) -> None:
        self.lines = lines
        self.found: list[ConfigProblem] = []
        self._keys: set[str] = set()

    def line_of(self, table: str, index: int | None, key: str) -> int | None:
        number = self.lines.find(table, index or 0, key)
        if number is None and not table:
            number = self.lines.find(key, 0, "")  # a top-level table: its [header] line
        if number is None and key:
            number = self.lines.find(table, index or 0, "")  # at least the table's header
        return number

    def fail(self, table: str, index: int | None, key: str, message: str) -> None:
        """A key whose value is wrong (only its first problem is told: the rest may follow from it)."""
        name = key_name(table, index, key)
        if name in self._keys:
            return
        self._keys.add(name)
        number = self.line_of(table, index, key)
        self.found.append(ConfigProblem(key=name, line=number, message=message,
                                        text=f"'{name}'" + (f" (line {number})" if number else "") + f": {message}"))

    def unknown(self, table: str, index: int | None, key: str) -> None:
        name = key_name(table, index, key)
        self._keys.add(name)
        number = self.line_of(table, index, key)
        self.found.append(ConfigProblem(key=name, line=number, message="unknown key",
                                        text=f"unknown key '{name}'" + (f" (line {number})" if number else "")))

    def missing(self, table: str, index: int | None, keys: list[str]) -> None:
        owner = key_name(table, index, "")
        self._keys.update(key_name(table, index, key) for key in keys)
        number = self.lines.find(table, index or 0, "")
        at = f" (the table at line {number})" if number else ""
        message = f"missing required key {', '.join(keys)}"
        self.found.append(ConfigProblem(key=owner, line=number, message=message, text=f"{owner}{at}: {message}"))

    def raise_if_any(self) -> None:
        if self.found:
            ordered = sorted(self.found, key=lambda p: (p.line is None, p.line or 0))  # the order of the file
            raise ConfigError(ordered)


_PLACEHOLDERS: dict[Any, Any] = {str: "", int: 0, float: 0.0, bool: False}


def _convert(value: Any, hint: Any) -> Any:
    """The value as the field's type, or raise ValueError saying what is wrong."""
    origin = get_origin(hint)
    if origin is tuple:
        (item,) = get_args(hint)[:1]
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return tuple(_convert(v, item) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ValueError(f"expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def build_table(cls: type[_T], raw: Mapping[str, Any], problems: Problems, table: str,
                index: int | None = None) -> _T:
    """One table as ``cls``; a wrong or missing value is told to ``problems`` and replaced by a stand-in."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            problems.unknown(table, index, key)
    values = {}
    missing = []
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in raw:
            try:
                values[f.name] = _convert(raw[f.name], hints[f.name])
                continue
            except ValueError as exc:
                problems.fail(table, index, f.name, str(exc))
        if f.default is MISSING and f.default_factory is MISSING:
            if f.name not in raw:
                missing.append(f.name)
            values[f.name] = () if get_origin(hints[f.name]) is tuple else _PLACEHOLDERS.get(hints[f.name])
    if missing:
        problems.missing(table, index, missing)
    return cls(**values)
