"""The key the Oxen way: OXEN_API_KEY, else the token for the API's host in Oxen's own auth file; never printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.core.credentials import CredentialsError, MissingKeyError, api_host, auth_file_path, token_for
from batchgen.emulator import EmulatorConfig, running_emulator
from batchgen.settings import resolve_settings
from tests.kit import write_manifest
from tests.kit_processes import REPO, env_with, job_statuses

TOKEN = "tok-0123456789-secret"


def auth_file(folder: Path, *entries: tuple[str, str]) -> Path:
    """FOLDER/auth_config.toml as `oxen config --auth HOST TOKEN` writes it, one [[host_configs]] per entry."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "auth_config.toml"
    path.write_text(
        "".join(f'[[host_configs]]\nhost = "{host}"\nauth_token = "{token}"\n\n' for host, token in entries),
        encoding="utf-8",
    )
    return path


def test_the_auth_file_is_in_oxen_config_dir_else_in_home() -> None:
    assert auth_file_path({"OXEN_CONFIG_DIR": "/c", "HOME": "/h"}) == Path("/c/auth_config.toml")
    assert auth_file_path({"HOME": "/h"}) == Path("/h/.config/oxen/auth_config.toml")
    assert auth_file_path({}) is None


def test_the_token_for_the_api_host_comes_from_the_file(tmp_path: Path) -> None:
    path = auth_file(tmp_path, ("other.example", "nope"), ("hub.oxen.ai", TOKEN))
    settings = resolve_settings({"OXEN_CONFIG_DIR": str(tmp_path)})
    assert settings.api_key == TOKEN
    assert settings.key_source == f"the auth file {path}"


def test_home_is_the_fallback(tmp_path: Path) -> None:
    auth_file(tmp_path / ".config" / "oxen", ("hub.oxen.ai", TOKEN))
    assert resolve_settings({"HOME": str(tmp_path)}).api_key == TOKEN


@pytest.mark.parametrize(
    ("entry", "base_url", "matches"),
    [
        ("127.0.0.1:8787", "http://127.0.0.1:8787", True),
        ("127.0.0.1:8787", "http://127.0.0.1:9999", False),
        ("127.0.0.1", "http://127.0.0.1:8787", False),  # a token for one server is not for another on that host
        ("hub.oxen.ai", "https://hub.oxen.ai", True),
        ("hub.oxen.ai", "https://hub.oxen.ai:443/", True),
        ("hub.oxen.ai:443", "https://hub.oxen.ai", True),
        ("HUB.oxen.ai", "https://hub.oxen.ai", True),
        ("hub.oxen.ai", "https://hub.oxen.ai:8443", False),
        ("hub.oxen.ai", "https://evil.example/hub.oxen.ai", False),
    ],
)
def test_the_host_matches_with_and_without_a_port(entry: str, base_url: str, matches: bool) -> None:
    text = f'[[host_configs]]\nhost = "{entry}"\nauth_token = "{TOKEN}"\n'
    assert token_for(text, base_url, "auth_config.toml") == (TOKEN if matches else None)


def test_api_host_drops_only_the_default_port() -> None:
    assert api_host("https://hub.oxen.ai") == api_host("https://hub.oxen.ai:443") == "hub.oxen.ai"
    assert api_host("http://127.0.0.1:8787/") == "127.0.0.1:8787"


def test_the_environment_variable_wins_over_the_file(tmp_path: Path) -> None:
    auth_file(tmp_path, ("hub.oxen.ai", TOKEN))
    settings = resolve_settings({"OXEN_CONFIG_DIR": str(tmp_path), "OXEN_API_KEY": "env-key"})
    assert (settings.api_key, settings.key_source) == ("env-key", "OXEN_API_KEY")
    given = resolve_settings({"OXEN_CONFIG_DIR": str(tmp_path), "OXEN_API_KEY": "env-key"}, api_key="arg-key")
    assert (given.api_key, given.key_source) == ("arg-key", "api_key=")


def test_no_entry_for_the_host_means_no_key_and_says_how_to_add_one(tmp_path: Path) -> None:
    auth_file(tmp_path, ("hub.oxen.ai", TOKEN))
    settings = resolve_settings({"OXEN_CONFIG_DIR": str(tmp_path)}, base_url="http://127.0.0.1:8787")
    assert (settings.api_key, settings.key_source) == (None, None)
    with pytest.raises(MissingKeyError) as caught:
        settings.require_key()
    assert str(caught.value) == "no API key: set OXEN_API_KEY or run `oxen config --auth 127.0.0.1:8787 TOKEN`"


def test_a_malformed_file_names_the_file_and_line_and_stops_only_what_needs_a_key(tmp_path: Path) -> None:
    path = tmp_path / "auth_config.toml"
    path.write_text(f'[[host_configs]]\nhost = "hub.oxen.ai"\nauth_token = {TOKEN}\n', encoding="utf-8")
    settings = resolve_settings({"OXEN_CONFIG_DIR": str(tmp_path)})  # `status` needs no key: no error here
    assert settings.api_key is None
    with pytest.raises(CredentialsError) as caught:
        settings.require_key()
    message = str(caught.value)
    assert str(path) in message and "line 3" in message
    assert TOKEN not in message


def test_host_configs_of_the_wrong_shape_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="host_configs must be a list"):
        token_for('host_configs = "hub.oxen.ai"\n', "https://hub.oxen.ai", "auth_config.toml")


def test_the_key_is_never_in_the_repr_of_settings(tmp_path: Path) -> None:
    auth_file(tmp_path, ("hub.oxen.ai", TOKEN))
    for settings in (
        resolve_settings({"OXEN_CONFIG_DIR": str(tmp_path)}),
        resolve_settings({"OXEN_API_KEY": TOKEN}),
        resolve_settings({}, api_key=TOKEN),
    ):
        assert settings.api_key == TOKEN
        assert TOKEN not in repr(settings) and TOKEN not in str(settings)


def test_a_missing_key_is_said_before_any_request(tmp_path: Path) -> None:
    # port 9 answers nothing: had a request been sent, the error would be "cannot reach"
    manifest = write_manifest(tmp_path, 1)
    result = subprocess.run(
        [sys.executable, "-m", "batchgen.cli", "run", str(manifest), "--base-url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env=env_with(None, OXEN_CONFIG_DIR=str(tmp_path / "none"), BATCHGEN_DB=str(tmp_path / "b.db")),
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "no API key: set OXEN_API_KEY or run `oxen config --auth 127.0.0.1:9 TOKEN`" in result.stderr
    assert "cannot reach" not in result.stderr and "Traceback" not in result.stderr


def test_a_run_takes_its_key_from_the_auth_file(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 2, extra=f"output: {tmp_path / 'out'}\n")
    db = tmp_path / "b.db"
    with running_emulator(EmulatorConfig(seed=1, time_scale=0.0005)) as emu:
        host = emu.base_url.split("://", 1)[1].rstrip("/")
        auth_file(tmp_path / "oxen", ("hub.oxen.ai", "not-this-one"), (host, emu.api_key))
        result = subprocess.run(
            [sys.executable, "-m", "batchgen.cli", "run", str(manifest), "--base-url", emu.base_url, "--db", str(db)],
            capture_output=True, text=True, timeout=120, cwd=REPO,
            env=env_with(None, OXEN_CONFIG_DIR=str(tmp_path / "oxen")),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert job_statuses(db) == {"succeeded": 2}
    assert emu.api_key not in result.stdout + result.stderr
