"""write_atomically: the whole file or the old one, readable by others, and no temp file left on any failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TextIO

import pytest

from batchgen.engine.outputs import write_atomically
from batchgen.errors import OutputError


def test_writes_the_whole_file_0644_and_creates_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.csv"
    write_atomically(target, lambda out: out.write("key,prompt\r\nk1,\u00e9\n"))
    assert target.read_bytes() == "key,prompt\r\nk1,\u00e9\n".encode()  # UTF-8, newlines untouched
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == ["out.csv"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "out.csv"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")

    def half_then_fail(out: TextIO) -> None:
        out.write("half")
        raise RuntimeError("writer broke")

    with pytest.raises(RuntimeError, match="writer broke"):
        write_atomically(target, half_then_fail)
    assert target.read_text(encoding="utf-8") == "old"
    assert os.listdir(target.parent) == ["out.csv"]


def test_an_os_error_is_an_output_error_naming_the_path_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "out.csv"
    target.mkdir(parents=True)  # renaming a file onto a directory fails after the temp file was written

    with pytest.raises(OutputError, match=rf"cannot write {target}: "):
        write_atomically(target, lambda out: out.write("data"))
    assert os.listdir(target.parent) == ["out.csv"] and os.listdir(target) == []


def test_an_unusable_directory_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory", encoding="utf-8")
    with pytest.raises(OutputError, match=r"cannot write .*blocker/out\.csv: .*check the directory is writable"):
        write_atomically(tmp_path / "blocker" / "out.csv", lambda out: out.write("data"))
