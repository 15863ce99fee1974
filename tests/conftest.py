"""Shared fixtures for datepin's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from fakepypi import FakePyPI

# Hypothesis fails an example that takes over 200 ms of wall time, and a test whose examples
# take long to generate. These tests check what datepin answers, not how fast: on a busy
# 2-core machine one example stalled by the disk or by another test's processes would fail a
# correct run.
settings.register_profile("datepin", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("datepin")

# ---------------------------------------------------------------------------------------------
# Fake upstream PyPI (tests/fakepypi.py)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_pypi() -> Iterator[FakePyPI]:
    """A fresh fake PyPI serving on 127.0.0.1, stopped (stalls released) at teardown."""
    with FakePyPI() as fake:
        yield fake


# -- The proxy under test ----------------------------------------------------------------------

from proxyproc import Proxy, write_config  # noqa: E402


@pytest.fixture
def proxy_config(tmp_path, fake_pypi):
    """proxy.toml pointing the built-in registry at the fake upstream (tests may rewrite it)."""
    return write_config(
        tmp_path / "proxy.toml",
        simple_url=fake_pypi.simple_url,
        json_url=fake_pypi.json_url,
        files_url=fake_pypi.files_url,
        upstream_timeout="5s",
        live_ttl="0s",
    )


@pytest.fixture
def proxy(tmp_path, proxy_config):
    """The real `datepin serve` as a subprocess on a free port, stopped at teardown."""
    p = Proxy(data_dir=tmp_path / "data", config=proxy_config)
    with p:
        yield p
