"""Results as an Oxen dataset: a run's files, table and manifest committed to a real local Oxen repository, and
read back through the oxenai library."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batchgen.cli import app
from batchgen.core.jobs import JobStatus
from batchgen.core.manifest import parse_manifest
from batchgen.emulator import EmulatorConfig, running_emulator
from batchgen.engine.oxen_repo import DatasetCommit, commit_message, commit_run
from batchgen.engine.store import Store
from batchgen.errors import ManifestError, OutputError
from tests.kit import IMAGE_MODEL, require, run_against, write_manifest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(name="oxen")
def oxen_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The oxenai library, with its user config (name and email for commits) in a directory of this test's own."""
    require(importlib.util.find_spec("oxen") is not None, "the oxenai package is not installed (the oxen extra)")
    import oxen

    monkeypatch.setenv("OXEN_CONFIG_DIR", str(tmp_path / "oxen-config"))
    oxen.user.config_user("batchgen tests", "tests@batchgen.invalid")
    return oxen


def emulator() -> EmulatorConfig:
    return EmulatorConfig(seed=11, time_scale=0.0002)


def export(tmp_path: Path, repo_dir: Path) -> DatasetCommit:
    store = Store.open(tmp_path / "state" / "batchgen.db", create=False)
    try:
        return commit_run(store, store.get_run("batch"), repo_dir)
    finally:
        store.close()


def table(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_run_becomes_one_commit_and_only_changes_make_more(tmp_path: Path, oxen: Any) -> None:
    manifest = write_manifest(tmp_path, ["a red cube", "a blue ball"], model=IMAGE_MODEL)
    repo_dir = tmp_path / "dataset"
    with running_emulator(emulator()) as emu:
        summary = await run_against(emu, manifest, tmp_path)
        assert summary.exit_code == 0

        first = export(tmp_path, repo_dir)
        repo = oxen.Repo(str(repo_dir))
        log = repo.log()
        assert [c.id for c in log] == [first.commit_id]
        assert "batchgen run batch" in log[0].message and "2 job(s) (2 succeeded)" in log[0].message
        assert f"manifest sha256 {sha256(manifest)}" in log[0].message and "$" in log[0].message
        rows = table(repo_dir / "results.csv")
        assert len(rows) == 2 and {r["status"] for r in rows} == {"succeeded"}
        files = sorted(r["output_path"] for r in rows)
        assert all(f.startswith("files/") for f in files)
        assert sorted(first.added) == sorted([*files, "manifest.yaml", "results.csv", "results.parquet"])
        originals = {f: sha256(tmp_path / "out" / Path(f).relative_to("files")) for f in files}

        # what the commit holds, not what the directory happens to hold: delete the working copies and restore them
        for f in [*files, "results.csv"]:
            (repo_dir / f).unlink()
        for f in [*files, "results.csv"]:
            repo.restore(f, source=first.commit_id)
        assert {f: sha256(repo_dir / f) for f in files} == originals
        assert len(table(repo_dir / "results.csv")) == 2
        assert (repo_dir / "manifest.yaml").read_bytes() == manifest.read_bytes()

        again = export(tmp_path, repo_dir)
        assert again.commit_id is None and again.head == first.commit_id
        assert len(repo.log()) == 1

        write_manifest(tmp_path, ["a red cube", "a blue ball", "a green cone"], model=IMAGE_MODEL)
        more = await run_against(emu, manifest, tmp_path)
        assert more.new_jobs == 1 and more.exit_code == 0
    third = export(tmp_path, repo_dir)
    log = repo.log()
    assert [c.id for c in log] == [third.commit_id, first.commit_id]
    assert "3 job(s) (3 succeeded)" in log[0].message
    new_file = next(r["output_path"] for r in table(repo_dir / "results.csv") if r["prompt"] == "a green cone")
    assert third.added == (new_file,)
    assert set(third.modified) == {"manifest.yaml", "results.csv", "results.parquet"}
    assert len(table(repo_dir / "results.csv")) == 3


async def test_the_output_directory_itself_keeps_its_files_in_place(tmp_path: Path, oxen: Any) -> None:
    manifest = write_manifest(tmp_path, ["one"], model=IMAGE_MODEL)
    with running_emulator(emulator()) as emu:
        await run_against(emu, manifest, tmp_path)
    done = export(tmp_path, tmp_path / "out")
    (row,) = table(tmp_path / "out" / "results.csv")
    assert not row["output_path"].startswith("files/") and (tmp_path / "out" / row["output_path"]).is_file()
    assert row["output_path"] in done.added and not (tmp_path / "out" / "files").exists()


async def test_a_run_written_by_the_manifest_setting_commits_at_its_end(tmp_path: Path, oxen: Any) -> None:
    extra = f"output:\n  oxen_repo: {tmp_path / 'ds'}\n"
    manifest = write_manifest(tmp_path, ["x", "y"], model=IMAGE_MODEL, extra=extra)
    with running_emulator(emulator()) as emu:
        summary = await run_against(emu, manifest, tmp_path)
    assert summary.oxen_commit is not None and summary.oxen_commit.commit_id is not None
    assert len(oxen.Repo(str(tmp_path / "ds")).log()) == 1


async def test_the_command_commits_then_says_nothing_changed(
    tmp_path: Path, oxen: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path, ["one"], model=IMAGE_MODEL)
    with running_emulator(emulator()) as emu:
        await run_against(emu, manifest, tmp_path)
    db = str(tmp_path / "state" / "batchgen.db")
    command = ["export", "batch", "--db", db, "--oxen-repo", str(tmp_path / "ds")]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    written = capfd.readouterr()  # what oxen's Rust core wrote to the file descriptors themselves
    assert first.stdout == "" and "oxen" not in written.out and "oxen added" in written.err  # stdout is for data
    (commit,) = oxen.Repo(str(tmp_path / "ds")).log()
    assert f"committed {commit.id}" in first.stderr and "4 added" in first.stderr
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0 and f"nothing changed in run batch since commit {commit.id}" in second.stderr


async def test_without_a_user_for_oxen_it_says_how_to_set_one(tmp_path: Path, oxen: Any) -> None:
    manifest = write_manifest(tmp_path, ["one"], model=IMAGE_MODEL)
    with running_emulator(emulator()) as emu:
        await run_against(emu, manifest, tmp_path)
    (tmp_path / "oxen-config" / "user_config.toml").unlink()
    with pytest.raises(OutputError, match="oxen config --name"):
        export(tmp_path, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # refused before anything was laid out


def test_the_commit_message_names_the_run_counts_cost_and_manifest() -> None:
    message = commit_message("ads", "ab" * 32, {str(JobStatus.SUCCEEDED): 3, str(JobStatus.FAILED): 1}, 0.5)
    assert message == f"batchgen run ads: 4 job(s) (3 succeeded, 1 failed), $0.50 spent, manifest sha256 {'ab' * 32}"


def test_output_takes_a_directory_or_a_mapping_with_the_oxen_repository() -> None:
    def settings(output: str) -> Any:
        text = f"name: m\nmodel: {IMAGE_MODEL}\nparams:\n  prompt: hi\noutput: {output}\n"
        return parse_manifest(text, Path("m.yaml"), lambda _: "").settings

    assert (settings("out/x").out_dir, settings("out/x").oxen_repo) == (Path("out/x"), None)
    both = settings("{dir: out/x, oxen_repo: ds/x}")
    assert (both.out_dir, both.oxen_repo) == (Path("out/x"), Path("ds/x"))
    assert settings("{oxen_repo: ds}").out_dir == Path("out/m")
    with pytest.raises(ManifestError, match=r"m\.yaml:5: unknown key `output\.dri` \(did you mean `dir`\?\)"):
        settings("{dri: out/x}")
    with pytest.raises(ManifestError, match=r"`output\.oxen_repo` must be a non-empty string"):
        settings("{oxen_repo: 3}")
