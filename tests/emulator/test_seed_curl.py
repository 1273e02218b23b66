"""The seed's own curl flows (docs' Async and Async-with-SSE examples) run unchanged, host replaced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from batchgen.emulator import EmulatorConfig, running_emulator
from tests.kit import require

SEED_BODY = (
    '{ "model": "openai-sora-2-pro", "prompt": "An ox being given a speeding ticket by a police officer. The ox is'
    ' driving a Porsche 911, with sunglasses and a hat on like a high profile celebrity."}'
)

ENQUEUE = f"""GEN_ID=$(curl -s -X POST $HOST/api/ai/queue \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $OXEN_API_KEY" \\
  -d '{SEED_BODY}' | jq -r '.generations[0].generation_id')
"""

POLL = """# Poll until the generation reaches a terminal status.
while true; do
  STATUS=$(curl -s -H "Authorization: Bearer $OXEN_API_KEY" \\
    "$HOST/api/ai/queue/$GEN_ID" | jq -r '.status')
  echo "Status: $STATUS"
  case $STATUS in succeeded|failed|cancelled) break;; esac
  sleep 5
done
# Print the result.
curl -s -H "Authorization: Bearer $OXEN_API_KEY" \\
  "$HOST/api/ai/queue/$GEN_ID" | jq .
"""

SSE = """curl -sN -H "Authorization: Bearer $OXEN_API_KEY" $HOST/api/events \\
  | awk -v id="$GEN_ID" '
      /^event: media_generation_completed$/ { expect=1; next }
      /^data: / && expect {
        payload = substr($0, 7)
        if (index(payload, "\\"generation_id\\":\\"" id "\\"")) { print payload; exit }
        expect = 0
      }
    ' | jq .
"""


def _is_mawk() -> bool:
    awk = shutil.which("awk")
    return awk is not None and Path(awk).resolve().name == "mawk"


def _tools() -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    require(not missing, f"{', '.join(missing)} not installed: cannot run the seed's curl flows")


def _run(script: str, host: str, key: str, tmp_path: Path) -> str:
    env = {**os.environ, "HOST": host, "OXEN_API_KEY": key}
    if _is_mawk():
        # mawk (Debian's default awk) block-buffers a pipe and would sit on the first events until ~4 KiB
        # arrived; its interactive mode reads line by line like gawk. The script itself stays as the seed has it.
        shim = tmp_path / "bin"
        shim.mkdir()
        (shim / "awk").write_text('#!/bin/sh\nexec mawk -W interactive "$@"\n')
        (shim / "awk").chmod(0o755)
        env["PATH"] = f"{shim}:{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_seed_enqueue_and_poll_loop_reaches_succeeded(tmp_path: Path) -> None:
    _tools()
    with running_emulator(EmulatorConfig(duration_s=0.2)) as emu:  # done well within the seed's 5 s sleep
        out = _run("set -e\n" + ENQUEUE + POLL, emu.base_url, emu.api_key, tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("Status: ")
    assert "Status: succeeded" in lines
    row = json.loads(out[out.index("{") :])
    assert row["status"] == "succeeded" and row["model_name"] == "openai-sora-2-pro"


def test_seed_enqueue_and_sse_awk_listener_reaches_succeeded(tmp_path: Path) -> None:
    _tools()
    # The seed enqueues BEFORE it subscribes, so the generation must still be running when curl connects.
    # After awk exits, curl only notices at its next write: a short keep-alive ends it quickly.
    with running_emulator(EmulatorConfig(duration_s=1.0, keepalive_s=0.2)) as emu:
        out = _run("set -e\n" + ENQUEUE + SSE, emu.base_url, emu.api_key, tmp_path)
    event = json.loads(out)
    assert event["status"] == "succeeded"
    assert list(event) == ["generation_id", "status", "media_type", "model", "url"]
