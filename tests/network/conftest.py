"""Fixtures for the network tests: one throw-away CA and server certificate for the whole session."""

from __future__ import annotations

import pytest

from tests.network.proxies import Certificates, make_certificates


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA (its PEM is what clients get as SSL_CERT_FILE) and its certificate for 127.0.0.1 and localhost."""
    return make_certificates(tmp_path_factory.mktemp("certificates"))
