"""`batchgen emulator`: the command starts a server that answers with the given key and fault knobs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_cli_serves_with_key_and_fault_knobs(tmp_path: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "batchgen.cli", "emulator", "--port", str(port), "--key", "k1"]
    command += ["--duration-s", "0", "--fault", "unknown_status_rate=1", "--faults", "chaos", "--seed", "2"]
    log = tmp_path / "emulator.log"  # a file, not a pipe: nobody drains a pipe and the access log would fill it
    with log.open("w") as sink, subprocess.Popen(command, stdout=sink, stderr=sink) as process:
        try:
            _exercise(process, port, log)
        finally:
            process.terminate()
            process.wait(10)


def _exercise(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait for the server, then check the key and that --fault wins over the --faults preset."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{base}/api/ai/models", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.1)
    headers = {"Authorization": "Bearer k1"}
    assert httpx.get(f"{base}/api/ai/queue", headers={"Authorization": "Bearer emulator-key"}).status_code == 401
    body = {"model": "flux-1-dev", "prompt": "x"}
    for _ in range(20):  # chaos may refuse a few enqueues
        reply = httpx.post(f"{base}/api/ai/queue", json=body, headers=headers)
        if reply.status_code == 200 and reply.headers["content-type"].startswith("application/json"):
            try:
                gid = reply.json()["generations"][0]["generation_id"]
                break
            except ValueError:
                continue
    else:
        raise AssertionError("no enqueue succeeded under chaos")
    for _ in range(20):
        status = httpx.get(f"{base}/api/ai/queue/{gid}", headers=headers)
        if status.status_code == 200 and status.headers["content-type"].startswith("application/json"):
            try:
                assert status.json()["status"] == "running"  # --fault overrides the chaos preset
                break
            except ValueError:
                continue
    else:
        raise AssertionError("no status poll answered")


def test_cli_rejects_unknown_fault_knob() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batchgen.cli", "emulator", "--fault", "nope=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "unknown fault knob" in done.stderr
