"""The one wording of file problems: pydantic errors as `where: what`, the YAML reader's line,
column and encoding problems, and the command line's refusal (exit 2)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from drivers.fileerrors import (
    FileError,
    error_message,
    error_path,
    read_yaml,
    refuse,
    validation_problems,
)


class Item(BaseModel):
    size: int = Field(gt=0)


class Doc(BaseModel):
    items: list[Item]


def test_paths_as_the_file_writes_them():
    assert error_path(("devices", 1, "battery", "max_kw"), tags={"battery"}) == "devices[1].max_kw"
    assert error_path(("battery", "max_kw"), tags={"battery"}) == "battery.max_kw"
    assert error_path(("steps", 0, "payload"), dotted=True) == "steps.0.payload"
    assert error_path(()) == "(top level)"
    assert error_path((), dotted=True, top="payload") == "payload"


def test_messages_take_the_loaders_hints():
    with pytest.raises(ValidationError) as exc:
        Doc.model_validate({"items": [{"size": 0}]})
    err = exc.value.errors()[0]
    assert error_message(err) == "Input should be greater than 0"
    assert error_message(err, {"greater_than": "must be > {gt}"}) == "must be > 0"
    assert error_message(err, got=True) == "Input should be greater than 0 (got 0)"
    assert validation_problems(exc.value) == ["items[0].size: Input should be greater than 0"]


def test_yaml_problems_name_the_file_line_and_encoding(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:\n  b: 1\n c: [\n")
    with pytest.raises(FileError) as exc:
        read_yaml(bad)
    assert exc.value.source == str(bad) and exc.value.problems[0].startswith("line 3, column 2")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: B\xfcro\n".encode("latin-1"))
    with pytest.raises(FileError, match="latin.yaml: not UTF-8 text .byte 0xfc at offset 7"):
        read_yaml(latin, source="latin.yaml")
    with pytest.raises(FileError, match="cannot read file"):
        read_yaml(tmp_path / "missing.yaml")


def test_refusal_lists_every_problem_and_exits_2(capsys):
    assert refuse(FileError("s.yaml", ["a: is required", "b: must be > 0"]), "scenario") == 2
    assert capsys.readouterr().err == ("s.yaml: invalid scenario (2 problem(s)):\n"
                                       "  a: is required\n  b: must be > 0\n")
