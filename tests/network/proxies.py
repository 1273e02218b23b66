"""Real proxies for tests: a throw-away CA, nginx terminating TLS in front of the emulator, tinyproxy as the
HTTPS_PROXY of a corporate network. Each server binds 127.0.0.1 only and keeps everything it writes (config,
pid, logs, temp files) under the test's own directory, so it runs as root in CI without touching /etc or /var.

    certs = make_certificates(directory)                         # once per session (tests/network/conftest.py)
    with nginx(emu.base_url, "streaming", tmp_path, certs=certs) as site:   # site.url: https://127.0.0.1:PORT
        with tinyproxy(tmp_path) as proxy:                       # proxy.url: http://127.0.0.1:PORT, for HTTPS_PROXY
            ...                                                  # site.access_log(), proxy.log()

Every process is stopped, reaped and its log files closed on leaving, whatever the test did; when something
inside fails, the server's own log is added to the error (an exception note), since that is where the why is.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from tests.kit import require, wait_for

Mode = Literal["streaming", "buffering"]
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
READY_PATH = "/__nginx/ready"  # answered by nginx itself: a readiness probe never reaches the emulator's ledger


PACKAGES = {"nginx": "nginx-light", "tinyproxy": "tinyproxy", "openssl": "openssl"}  # Debian's, as .ci/run installs


def require_tools(*names: str) -> None:
    """Skip (fail under CI, where .ci/run installs them) unless every one of `names` is on PATH."""
    for name in names:
        require(shutil.which(name), f"{name} is not installed (apt-get install {PACKAGES.get(name, name)})")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (a server started next is very likely to get it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- certificates ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A CA made for this test session and a server certificate it signed for 127.0.0.1 and localhost."""

    ca: Path  # the CA's certificate (PEM): what a client trusts, as SSL_CERT_FILE
    cert: Path  # the server's certificate (PEM)
    key: Path  # the server's private key (PEM, unencrypted)

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this CA only."""
        return ssl.create_default_context(cafile=str(self.ca))


SERVER_EXTENSIONS = """\
subjectAltName = IP:127.0.0.1, DNS:localhost
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def make_certificates(directory: Path) -> Certificates:
    """Write a CA and a server certificate into `directory` with the openssl CLI (P-256 keys: milliseconds)."""
    require_tools("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    serial = int.from_bytes(os.urandom(8), "big")
    (directory / "server.ext").write_text(SERVER_EXTENSIONS, encoding="utf-8")
    steps = [
        f"req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj '/CN=batchgen throw-away test CA'"
        " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
        f"req -new {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        f"x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -days 2 -extfile server.ext"
        " -out server.pem",
    ]
    for step in steps:
        command = ["openssl", *shlex.split(step)]
        done = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"openssl {step} failed:\n{done.stderr}"
    return Certificates(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")


# ---- running a server in the foreground --------------------------------------------------------------------------


@contextlib.contextmanager
def foreground(
    command: list[str], output: Path, *, what: str, log: Callable[[], str]
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` as a process in a session of its own, its output appended to `output`. On leaving it gets SIGTERM,
    then SIGKILL to its whole process group (an nginx master's workers too) if it has not exited within
    STOP_TIMEOUT_S, and is reaped. Any exception raised inside gets `log()` (the server's own log) as a note."""
    with output.open("ab") as sink:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True)
        try:
            yield process
        except BaseException as error:
            error.add_note(f"--- {what}'s log ---\n{log()}")
            raise
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(STOP_TIMEOUT_S)


def read_text(path: Path) -> str:
    """The file's text so far ('' before it exists)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# ---- nginx -------------------------------------------------------------------------------------------------------

MODES: dict[Mode, str] = {
    # what an SSE-aware reverse proxy does: every byte passes as soon as it arrives
    "streaming": """
            proxy_buffering off;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 3600s;""",
    # nginx's defaults plus compression: responses are held in proxy buffers and gzip's, so an event stream's few
    # bytes never come through. The emulator, like Oxen's API, asks proxies not to buffer its stream
    # (X-Accel-Buffering: no); a proxy that ignores the hint (a CDN, a corporate gateway) is the case to survive.
    "buffering": """
            proxy_buffering on;
            proxy_ignore_headers X-Accel-Buffering;
            gzip on;
            gzip_types text/event-stream application/json;
            gzip_min_length 0;""",
}


@dataclass(frozen=True)
class Nginx:
    """A running nginx: its base URL and its logs."""

    url: str  # https://127.0.0.1:PORT
    port: int
    prefix: Path

    def access_log(self) -> str:
        return read_text(self.prefix / "access.log")

    def error_log(self) -> str:
        return read_text(self.prefix / "error.log") + read_text(self.prefix / "stderr.log")


def nginx_conf(upstream_url: str, mode: Mode, prefix: Path, port: int, certs: Certificates) -> str:
    """The whole configuration: one TLS server on 127.0.0.1:PORT proxying everything to `upstream_url`."""
    temp = prefix / "temp"
    # as root, nginx's workers would switch to `nobody`, who cannot enter pytest's private temporary directories
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "".join(
        f"    {kind}_temp_path {temp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temps}    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {certs.cert};
        ssl_certificate_key {certs.key};
        location = {READY_PATH} {{ return 204; }}
        location / {{
            proxy_pass {upstream_url.rstrip("/")};{MODES[mode]}
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(upstream_url: str, mode: Mode, tmp_path: Path, *, certs: Certificates) -> Iterator[Nginx]:
    """Real nginx in the foreground, serving https://127.0.0.1:PORT with `certs` and proxying to `upstream_url`
    (streaming: SSE passes live; buffering: held back and gzipped). Yields once it answers over TLS."""
    require_tools("nginx")
    prefix = Path(tempfile.mkdtemp(prefix=f"nginx-{mode}-", dir=tmp_path))
    (prefix / "temp").mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(upstream_url, mode, prefix, port, certs), encoding="utf-8")
    site = Nginx(url=f"https://127.0.0.1:{port}", port=port, prefix=prefix)
    command = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
    with foreground(command, prefix / "stderr.log", what="nginx", log=site.error_log) as process:
        _wait_answering(site, certs, process)
        yield site


def _wait_answering(site: Nginx, certs: Certificates, process: subprocess.Popen[bytes]) -> None:
    """Wait until nginx answers its readiness probe over TLS; fail if it exits first or after START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(verify=certs.client_context(), trust_env=False, timeout=2.0) as probe:
        while process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if probe.get(site.url + READY_PATH).status_code == 204:
                    return
            assert time.monotonic() < deadline, f"nginx did not answer within {START_TIMEOUT_S} s"
            time.sleep(0.02)
    raise AssertionError(f"nginx exited ({process.returncode}) on start")


# ---- tinyproxy ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tinyproxy:
    """A running tinyproxy: the URL to put in HTTPS_PROXY, and its log."""

    url: str  # http://127.0.0.1:PORT
    port: int
    directory: Path

    def log(self) -> str:
        return read_text(self.directory / "tinyproxy.log") + read_text(self.directory / "stderr.log")

    def connects(self) -> list[str]:
        """The request lines of the CONNECT tunnels it opened, as its log shows them."""
        return [line for line in self.log().splitlines() if "CONNECT " in line and "Request" in line]


ACCEPTING = "Accepting connections"  # logged once it listens (tinyproxy 1.11: "Starting main loop. Accepting ...")


def tinyproxy_conf(directory: Path, port: int) -> str:
    """A forward proxy for 127.0.0.1's clients only. No ConnectPort line: CONNECT may reach any port (nginx's)."""
    return f"""Port {port}
Listen 127.0.0.1
Timeout 600
LogFile "{directory / "tinyproxy.log"}"
LogLevel Info
PidFile "{directory / "tinyproxy.pid"}"
MaxClients 100
Allow 127.0.0.1
"""


@contextlib.contextmanager
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    """Real tinyproxy in the foreground (-d) on 127.0.0.1:PORT; yields once it accepts connections."""
    require_tools("tinyproxy")
    directory = Path(tempfile.mkdtemp(prefix="tinyproxy-", dir=tmp_path))
    port = free_port()
    conf = directory / "tinyproxy.conf"
    conf.write_text(tinyproxy_conf(directory, port), encoding="utf-8")
    proxy = Tinyproxy(url=f"http://127.0.0.1:{port}", port=port, directory=directory)
    with foreground(
        ["tinyproxy", "-d", "-c", str(conf)], directory / "stderr.log", what="tinyproxy", log=proxy.log
    ) as process:

        def listening_or_gone() -> bool:
            return ACCEPTING in proxy.log() or process.poll() is not None

        wait_for(listening_or_gone, timeout=START_TIMEOUT_S, what="tinyproxy to listen")
        assert process.poll() is None, f"tinyproxy exited ({process.returncode}) on start"
        yield proxy
