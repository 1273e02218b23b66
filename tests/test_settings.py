"""The one settings resolver: flags, then the run's stored base URL, then the environment, then the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchgen.cli import app
from batchgen.settings import DEFAULT_BASE_URL, DEFAULT_DB, resolve_settings

ENV = {
    "BATCHGEN_BASE_URL": "https://env.example",
    "OXEN_API_KEY": "env-key",
    "BATCHGEN_DB": "envdir/env.db",
    "BATCHGEN_STATE_DIR": "envstate",
}


def test_defaults_with_an_empty_environment() -> None:
    settings = resolve_settings({})
    assert settings.base_url == DEFAULT_BASE_URL == "https://hub.oxen.ai"
    assert settings.api_key is None
    assert settings.db == DEFAULT_DB == Path("state/batchgen.db")
    assert settings.state_dir == Path("state")  # the database's folder


def test_the_environment_beats_the_defaults() -> None:
    settings = resolve_settings(ENV)
    assert (settings.base_url, settings.api_key) == ("https://env.example", "env-key")
    assert (settings.db, settings.state_dir) == (Path("envdir/env.db"), Path("envstate"))


def test_flags_beat_the_environment() -> None:
    settings = resolve_settings(ENV, base_url="https://flag.example", api_key="flag-key", db="flagdir/flag.db")
    assert (settings.base_url, settings.api_key, settings.db) == (
        "https://flag.example",
        "flag-key",
        Path("flagdir/flag.db"),
    )
    assert settings.state_dir == Path("envstate")  # no flag for it


def test_the_state_dir_follows_the_database_unless_the_environment_names_one() -> None:
    env = {k: v for k, v in ENV.items() if k != "BATCHGEN_STATE_DIR"}
    assert resolve_settings(env).state_dir == Path("envdir")
    assert resolve_settings(env, db="elsewhere/x.db").state_dir == Path("elsewhere")


def test_a_stored_run_keeps_its_api_over_the_environment_but_not_over_the_flag() -> None:
    # its generations live on the API it started on: resume, cancel and unused must go back there
    assert resolve_settings(ENV, run_base_url="http://127.0.0.1:8787").base_url == "http://127.0.0.1:8787"
    assert resolve_settings(ENV, base_url="https://flag.example", run_base_url="x").base_url == "https://flag.example"


@pytest.mark.parametrize("name", sorted(ENV))
def test_an_empty_variable_counts_as_unset(name: str) -> None:
    assert resolve_settings({name: ""}) == resolve_settings({})


def test_an_explicit_empty_key_is_kept_and_means_no_key() -> None:
    assert resolve_settings(ENV, api_key="").api_key == ""


def test_the_emulator_caches_model_entries_apart() -> None:
    settings = resolve_settings({})
    assert settings.model_cache(emulated=False) == Path("state")
    assert settings.model_cache(emulated=True) == Path("state/emulator")


def test_plan_caches_model_entries_beside_the_database_like_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # plan used to cache in ./state whatever the database; the emulator's entries go to their own folder
    monkeypatch.delenv("BATCHGEN_STATE_DIR")
    monkeypatch.chdir(tmp_path)
    demo = Path(__file__).resolve().parents[1] / "manifests" / "demo.yaml"
    result = CliRunner().invoke(app, ["plan", str(demo), "--emulate", "--db", "elsewhere/b.db"])
    assert result.exit_code == 0, result.output
    cached = {p.name for p in (tmp_path / "elsewhere" / "emulator" / "models").iterdir()}
    assert cached == {"openai-sora-2-pro.json", "flux-1-dev.json"}
    assert not (tmp_path / "state" / "emulator").exists()


def test_a_postgresql_url_stays_a_url_and_the_model_cache_defaults_to_state() -> None:
    url = "postgresql://batch@db.internal:5432/batches"
    from_flag = resolve_settings({}, db=url)
    from_env = resolve_settings({"BATCHGEN_DB": url})
    assert from_flag.db == from_env.db == url  # not a Path: "//" would collapse into a file name
    assert from_flag.state_dir == Path("state")
    assert resolve_settings({}, db="state/x.db").db == Path("state/x.db")
