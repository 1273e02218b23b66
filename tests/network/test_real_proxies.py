"""batchgen behind real proxies, against the plain poller on the same path.

Each path (nginx terminating TLS and streaming; nginx buffering and gzipping; tinyproxy as HTTPS_PROXY in front
of the streaming nginx) is run twice, each time on a fresh emulator behind fresh proxies: by `batchgen run` as a
user runs it, and by the plain poller (benchmarks/plain_poller.py) in a process of its own. Both trust the
session's throw-away CA through SSL_CERT_FILE and find the proxy through HTTPS_PROXY, as any httpx client does.
batchgen must finish every job exactly once, no slower than the poller (give or take a loaded 2-core machine) and
with no more requests per job (besides its 4 once per run). Requests are counted on the emulator, as benchmarks/bench.py counts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchgen.emulator import Account, EmulatorConfig, RunningEmulator, running_emulator
from batchgen.engine.client import OxenClient, RetryPolicy
from batchgen.errors import ApiUnreachableError
from tests.kit import IMAGE_MODEL, assert_exactly_once, wait_for, write_manifest
from tests.kit_processes import REPO, batchgen_cmd, env_with
from tests.network.proxies import Certificates, Mode, Nginx, Tinyproxy, nginx, tinyproxy

JOBS = 12
KEY = "oxen-key-for-the-proxy-tests-4d1f9c"  # distinctive, so a proxy's log can be searched for it
TIME_SCALE = 0.1  # flux-1-dev's documented 5-30 s runs take 0.5-3 s here, after a queue delay of 0.05-0.3 s
POLL_EVERY = 5.0  # the plain poller's interval: its default, and the "plain poll-every-5-s client"
SUBMIT_RATE = "100"  # the emulator has no rate limit: as in bench.py, batchgen's default 10/s is lifted
PER_RUN = 4  # batchgen's requests once per run: the access check, the model's entry, the cost read, the stream
SLACK_S, SLACK_RATIO = 2.0, 1.25  # batchgen's start-up (imports, plan) and a loaded 2-core machine
# batchgen (or the poller) running this long is stalled whatever the other does: killed, and the test fails
STALLED_AFTER_S = 60.0
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


class Stalled(AssertionError):
    """batchgen did not finish long after the time it had: killed."""


@dataclass(frozen=True)
class Route:
    """One path from a client to a fresh emulator: nginx, and tinyproxy in front of it when asked."""

    emu: RunningEmulator
    site: Nginx
    proxy: Tinyproxy | None
    certs: Certificates

    def env(self) -> dict[str, str]:
        """A client's environment: the key, the CA to trust, and the forward proxy (or none at all)."""
        env = {k: v for k, v in env_with(KEY).items() if k.lower() not in PROXY_VARIABLES and k != "SSL_CERT_DIR"}
        env["SSL_CERT_FILE"] = str(self.certs.ca)
        if self.proxy is not None:
            env["HTTPS_PROXY"] = self.proxy.url
            env["NO_PROXY"] = ""
        return env


@contextlib.contextmanager
def route(directory: Path, certs: Certificates, mode: Mode, *, forward_proxy: bool = False) -> Iterator[Route]:
    """A fresh emulator behind nginx in `mode` (behind tinyproxy too with `forward_proxy`), for one client."""
    directory.mkdir(parents=True)
    config = EmulatorConfig(keys={KEY: Account(username="proxied")}, seed=7, time_scale=TIME_SCALE)
    with running_emulator(config) as emu, nginx(emu.base_url, mode, directory, certs=certs) as site:
        emu.state.base_url = site.url  # result URLs name the proxy, as production's name the API's own host
        with tinyproxy(directory) if forward_proxy else contextlib.nullcontext() as proxy:
            yield Route(emu, site, proxy, certs)


@dataclass(frozen=True)
class Measured:
    """One client's run: wall time from process start to exit, and the requests the emulator received."""

    client: str
    seconds: float
    requests: int

    @property
    def per_job(self) -> float:
        return self.requests / JOBS

    def __str__(self) -> str:
        return f"{self.client}: {self.seconds:.2f} s, {self.requests} requests ({self.per_job:.2f} per job)"


def time_limit(poller: Measured) -> float:
    return poller.seconds * SLACK_RATIO + SLACK_S


def run_bounded(name: str, command: list[str], env: dict[str, str], timeout: float) -> tuple[float, str]:
    """Run `command` to its end and return (wall seconds, output); fail unless it exits 0. Past `timeout` it is
    killed and reaped, and Stalled raised."""
    started = time.monotonic()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
    ) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            raise Stalled(
                f"{name} did not finish within {timeout:.1f} s, so was killed. Its output:\n{output}"
            ) from None
    seconds = time.monotonic() - started
    assert process.returncode == 0, f"{name} exited {process.returncode}:\n{output}"
    return seconds, output


def requests_received(emu: RunningEmulator) -> int:
    """Every request the emulator received, an event stream counted once (as bench.py counts). A request is logged
    just after its reply has gone, so this waits (bounded) for the count to hold still for 0.1 s."""

    def count() -> int:
        ledger = emu.ledger
        return sum(1 for r in ledger.requests if r.path != "/api/events") + ledger.stream_connections

    deadline = time.monotonic() + 5.0
    last = count()
    while True:
        time.sleep(0.1)
        now = count()
        if now == last:
            return now
        assert time.monotonic() < deadline, "the emulator's request log kept growing after the client had exited"
        last = now


def assert_tunnelled(path: Route) -> None:
    """When there is a forward proxy, the client's traffic went through it: CONNECTs to nginx's port."""
    if path.proxy is not None:
        connects = path.proxy.connects()
        assert any(f"CONNECT 127.0.0.1:{path.site.port} " in line for line in connects), path.proxy.log()


def run_batchgen(path: Route, directory: Path, *, timeout: float) -> Measured:
    """`batchgen run` as a user runs it, through `path`; every job succeeded exactly once, its file checked."""
    manifest = write_manifest(directory, JOBS, model=IMAGE_MODEL, concurrency=JOBS)
    db = directory / "state" / "batchgen.db"
    out = directory / "out"
    command = batchgen_cmd("-v", "run", manifest, "--db", db, "--base-url", path.site.url, "--out", out)
    seconds, output = run_bounded("batchgen", [*command, "--submit-rate", SUBMIT_RATE], path.env(), timeout)
    rows = assert_exactly_once(path.emu, db)
    assert len(rows) == JOBS, output
    assert_tunnelled(path)
    return Measured("batchgen", seconds, requests_received(path.emu))


def run_poller(path: Route, directory: Path) -> Measured:
    """The plain poller through `path`; every job created once and every file it wrote is one the emulator served."""
    out = directory / "out"
    command = [sys.executable, "-m", "tests.network.poller_entry", "--base-url", path.site.url]
    command += ["--jobs", str(JOBS), "--poll-every", str(POLL_EVERY), "--out", str(out)]
    seconds, output = run_bounded("the plain poller", command, path.env(), timeout=120)
    assert len(path.emu.ledger.created_ids) == JOBS, output
    written = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in out.iterdir())
    assert written == sorted(path.emu.ledger.served_sha256.values()), output
    assert len(written) == JOBS
    assert_tunnelled(path)
    return Measured("plain poller", seconds, requests_received(path.emu))


def compare(
    tmp_path: Path,
    certs: Certificates,
    mode: Mode,
    *,
    forward_proxy: bool = False,
    inspect: Callable[[Route], None] | None = None,
) -> Measured:
    """Run the poller and batchgen side by side, each on its own route (its own emulator and proxies): the
    machine's load falls on both alike. batchgen must be no slower and no chattier. `inspect` looks at batchgen's
    route (its proxies' logs) before it is torn down."""
    with route(tmp_path / "poller", certs, mode, forward_proxy=forward_proxy) as theirs_path:
        with route(tmp_path / "batchgen", certs, mode, forward_proxy=forward_proxy) as path:
            with ThreadPoolExecutor(max_workers=1) as pool:
                poller_run = pool.submit(run_poller, theirs_path, tmp_path / "poller")
                ours = run_batchgen(path, tmp_path / "batchgen", timeout=STALLED_AFTER_S)
                poller = poller_run.result(timeout=STALLED_AFTER_S)
            if inspect is not None:
                inspect(path)
    limit = time_limit(poller)
    print(f"{mode}{' via tinyproxy' if forward_proxy else ''}: {ours}; {poller}")
    assert ours.seconds <= limit, f"{ours}; {poller}: over the limit of {limit:.2f} s"
    # per job, no more than the poller; per run, batchgen also checks the key, reads the model's entry and the
    # costs, and opens its stream, which the poller never does
    assert ours.requests <= poller.requests + PER_RUN, f"{ours}; {poller}"
    return ours


def test_through_nginx_streaming(certificates: Certificates, tmp_path: Path) -> None:
    compare(tmp_path, certificates, "streaming")


def test_through_nginx_buffering_and_gzip(certificates: Certificates, tmp_path: Path) -> None:
    compare(tmp_path, certificates, "buffering")


def test_through_forward_proxy_https_proxy_and_the_key_never_reaches_it_in_clear(
    certificates: Certificates, tmp_path: Path
) -> None:
    compare(tmp_path, certificates, "streaming", forward_proxy=True, inspect=key_stayed_in_the_tunnel)


def key_stayed_in_the_tunnel(path: Route) -> None:
    """The proxy saw only CONNECTs to nginx, never the key; nginx received the requests over TLS."""
    assert path.proxy is not None
    log = path.proxy.log()
    requests = re.findall(r"Request \(file descriptor \d+\): (\S+) (\S+)", log)
    assert requests, log
    # only tunnels, all to nginx: no request went through the proxy as plain HTTP it could read
    assert set(requests) == {("CONNECT", f"127.0.0.1:{path.site.port}")}, log
    assert KEY not in log and "authorization" not in log.lower() and "bearer" not in log.lower(), log
    # and what went through the tunnels arrived, over TLS, at nginx
    access = path.site.access_log()
    assert len(re.findall(r'"POST /api/ai/queue HTTP/1\.1" 200 ', access)) == JOBS, access
    # nginx logs the stream once it has seen the client go
    wait_for(lambda: '"GET /api/events HTTP/1.1" 200 ' in path.site.access_log(), what="the stream in nginx's log")
    assert KEY not in path.site.access_log()


async def test_an_untrusted_certificate_says_how_to_trust_it(certificates: Certificates, tmp_path: Path) -> None:
    # the client trusts only an unrelated bundle (certifi's): nginx's throw-away CA is not in it
    with running_emulator(EmulatorConfig(keys={KEY: Account(username="proxied")})) as emu:
        with nginx(emu.base_url, "streaming", tmp_path, certs=certificates) as site:
            async with OxenClient(site.url, KEY, retry=RetryPolicy(attempts=1)) as client:
                with pytest.raises(ApiUnreachableError) as caught:
                    await client.check_access()
    message = str(caught.value)
    assert "is not trusted" in message and "SSL_CERT_FILE" in message and f"127.0.0.1:{site.port}" in message
    assert not emu.ledger.requests, "nothing reached the API"
