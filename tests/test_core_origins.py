"""Where the API key may go: only to the API's own origin, over https, or over http to this machine."""

from __future__ import annotations

import pytest

from batchgen.core.origins import key_may_go_to, same_origin

API = "https://hub.oxen.ai"


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://hub.oxen.ai/api/ai/queue", API),
        ("https://hub.oxen.ai/api/ai/queue?x=1#f", "https://hub.oxen.ai/api"),
        ("https://HUB.Oxen.AI/api", API),  # host names are case-insensitive
        ("HTTPS://hub.oxen.ai/api", API),
        ("https://hub.oxen.ai:443/api", API),  # an explicit default port is the same port
        ("https://hub.oxen.ai/api", "https://hub.oxen.ai:443"),
        ("https://hub.oxen.ai:8443/api", "https://hub.oxen.ai:8443"),
        ("http://127.0.0.1:8123/api/ai/queue", "http://127.0.0.1:8123"),  # the built-in emulator
        ("http://localhost:8123/api", "http://localhost:8123"),
        ("http://[::1]:8123/api", "http://[::1]:8123"),
    ],
)
def test_the_key_goes_to_the_apis_own_origin(url: str, base: str) -> None:
    assert same_origin(url, base)
    assert key_may_go_to(url, base)


@pytest.mark.parametrize(
    ("url", "base", "why"),
    [
        ("http://hub.oxen.ai/api", "http://hub.oxen.ai", "plain http to a host on the network"),
        ("http://192.168.1.20:8123/api", "http://192.168.1.20:8123", "plain http to another machine"),
        ("http://hub.oxen.ai/api", API, "a scheme downgrade"),
        ("https://hub.oxen.ai:8443/api", API, "another port"),
        ("https://hub.oxen.ai/api", "https://hub.oxen.ai:8443", "another port"),
        ("http://127.0.0.1:9999/x", "http://127.0.0.1:8123", "another port on loopback"),
        ("http://localhost:8123/x", "http://127.0.0.1:8123", "another host name, even for the same machine"),
        ("https://oxen-results.s3.amazonaws.com/v.mp4?sig=1", API, "a presigned storage URL"),
        ("https://hub.oxen.ai.evil.example/api", API, "a look-alike host"),
        ("https://hub.oxen.ai@evil.example/api", API, "user info before another host"),
        ("https://evil.example/?u=https://hub.oxen.ai", API, "the API only in the query"),
        ("/api/ai/queue", API, "a relative URL"),
        ("", API, "no URL"),
        ("https://hub.oxen.ai:notaport/api", API, "a malformed port"),
    ],
)
def test_the_key_goes_nowhere_else(url: str, base: str, why: str) -> None:
    assert not key_may_go_to(url, base), why


def test_same_origin_compares_scheme_host_and_port() -> None:
    assert same_origin("http://example.com:80/a", "http://example.com/b")
    assert same_origin("http://example.com/a", "http://example.com:80")
    assert not same_origin("http://example.com:443/a", "https://example.com")  # same port, another scheme
    assert not same_origin("https://example.com/a", "https://example.org/a")
    assert not same_origin("https://example.com:444/a", "https://example.com")
    assert not same_origin("", ""), "two unparseable URLs are not one origin"
    assert not same_origin("https://h:bad/a", "https://h:bad/a")
