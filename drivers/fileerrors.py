"""Problems in the files people write (site config, register maps, scenarios, event and
platform scripts), reported the one way: `source`, then one `where: what` line per problem.
Here are the exception every loader raises (or subclasses), the wording of pydantic's
validation errors, the YAML reader that gives the line and column of a syntax error, and
the command line's refusal of an invalid file. Loaders pass in their own hints."""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

EXIT_INVALID = 2  # the command line's exit code for an invalid file


class FileError(Exception):
    """An invalid file (or device entry): `source` names it, `problems` holds one
    `where: what` line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(source, problems)

    def __str__(self) -> str:
        return f"{self.source}: " + "; ".join(self.problems)


def error_path(loc: tuple, *, tags: Collection[str] = (), dotted: bool = False,
               top: str = "(top level)") -> str:
    """Where a pydantic error is, as the file writes it: `devices[1].max_kw` (or
    `steps.0.payload` when `dotted`). `tags` are the discriminator values pydantic inserts
    after a list index (a device's role, an event's type): not part of the file's path."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int) and not dotted:
            out += f"[{part}]"
        elif part in tags and i and isinstance(loc[i - 1], int):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or top


def error_message(err: Mapping, hints: Mapping[str, str] | None = None, *,
                  got: bool = False) -> str:
    """What is wrong, in the loader's words where it has a hint for the error type (a
    template over pydantic's `ctx`), else pydantic's; `got` adds the value given."""
    template = (hints or {}).get(err["type"])
    if template:
        try:
            return template.format(**(err.get("ctx") or {}))
        except (KeyError, IndexError):
            pass
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{msg} (got {err['input']!r})" if got and "input" in err else msg


def validation_problems(exc: ValidationError, hints: Mapping[str, str] | None = None, *,
             tags: Collection[str] = (), dotted: bool = False) -> list[str]:
    """Every error of a validation as one `where: what` line."""
    return [f"{error_path(e['loc'], tags=tags, dotted=dotted)}: {error_message(e, hints)}"
            for e in exc.errors()]


def read_text(path: Path, error: type[FileError] = FileError,
              source: str | None = None) -> str:
    """A UTF-8 text file's content; one that cannot be read or is not UTF-8 raises
    `error(source, [line])`. Where `source` names a setting rather than the file, the line
    names the file."""
    source = str(path) if source is None else source
    it = "file" if source == str(path) else str(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(source, [f"cannot read {it}: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        where = "" if it == "file" else f"{it}: "
        raise error(source, [f"{where}not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                             f"offset {exc.start}); save the file as UTF-8"]) from None


def read_yaml(path: Path, error: type[FileError] = FileError,
              source: str | None = None) -> object:
    """A YAML file's data; a file that cannot be read, is not UTF-8 or is not YAML raises
    `error(source, [line])`, with the line and column of a syntax error."""
    text = read_text(path, error, source)
    source = str(path) if source is None else source
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise error(source, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None


def or_shipped(given: str | Path, shipped: Path) -> Path:
    """`given` where it exists (or is absolute); else the file of that name in the `shipped`
    directory, with or without its folder and `.yaml`: `configs/demo.yaml`, `demo.yaml` and
    `demo` all find the installed package's own copy from any directory. Nothing found: `given`
    (its loader says it cannot be read)."""
    path = Path(given)
    if path.exists() or path.is_absolute():
        return path
    candidate = shipped / (path.name if path.suffix else f"{path.name}.yaml")
    return candidate if candidate.is_file() else path


def refuse(exc: FileError, what: str) -> int:
    """Tell the person at the command line every problem of an invalid `what` (one
    indented line each); the exit code for it."""
    print(f"{exc.source}: invalid {what} ({len(exc.problems)} problem(s)):", file=sys.stderr)
    for line in exc.problems:
        print(f"  {line}", file=sys.stderr)
    return EXIT_INVALID
