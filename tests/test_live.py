"""Against the real PyPI (run alone with `-m live`): the onnx example from the README, and
torch 2.1.0, whose CUDA wheels uv reads by ranges.

onnx 1.14.0 has no Python 3.12 wheels, so pip runs under Python 3.11 and uv resolves for 3.11.
The proxy inherits this environment: where PyPI is reached through a TLS-intercepting egress,
SSL_CERT_FILE names the CA bundle datepin must verify upstream against.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clients import ca_bundle_env, pip_resolve, python311, uv_compile
from fakepypi import closed_port
from proxyproc import Proxy, write_config

pytestmark = pytest.mark.live

PIN = "2023-11-18"
ONNX = ["onnx==1.14.0"]
EXPECTED = {"numpy": "1.26.2", "onnx": "1.14.0", "protobuf": "4.25.1", "typing-extensions": "4.8.0"}


def py311() -> str:
    found = python311()
    if found is None:
        pytest.skip("needs a Python 3.11 interpreter (python3.11 on PATH or under pyenv)")
    return found


def test_path_mode_resolves_onnx_as_of_the_pin_and_then_without_upstream(tmp_path):
    python = py311()
    data = tmp_path / "data"
    with Proxy(data_dir=data) as proxy:  # no config: the real PyPI
        index = proxy.index(PIN)
        assert pip_resolve(index, ONNX, python=python) == EXPECTED
        assert uv_compile(index, ONNX, python_version="3.11") == EXPECTED

    # Upstream unreachable, same data directory: history and stored files answer alone.
    dead = f"http://127.0.0.1:{closed_port()}"
    offline = write_config(
        tmp_path / "offline.toml", simple_url=f"{dead}/simple/", json_url=f"{dead}/pypi/",
        files_url=f"{dead}/files/", upstream_timeout="2s",
    )
    with Proxy(data_dir=data, config=offline) as proxy:
        index = proxy.index(PIN)
        assert pip_resolve(index, ONNX, python=python) == EXPECTED
        assert uv_compile(index, ONNX, python_version="3.11") == EXPECTED


def test_forward_mode_resolves_onnx_as_of_the_pin(tmp_path):
    python = py311()
    with Proxy(data_dir=tmp_path / "data") as proxy:
        bundle = tmp_path / "bundle.pem"
        subprocess.run(
            [sys.executable, "-m", "datepin", "ca", "--data-dir", str(proxy.data_dir),
             "--bundle", str(bundle)],
            check=True, capture_output=True, timeout=60,
        )
        env = {"HTTPS_PROXY": f"http://{PIN}:x@127.0.0.1:{proxy.port}", **ca_bundle_env(Path(bundle))}
        pypi = "https://pypi.org/simple/"
        assert uv_compile(pypi, ONNX, python_version="3.11", env_extra=env) == EXPECTED
        assert pip_resolve(pypi, ONNX, python=python, env_extra=env) == EXPECTED


def test_uv_reads_torch_s_wheels_without_metadata_files_by_ranges(tmp_path):
    """The PyPI reached from here lists no `.metadata` files: uv reads the end of each wheel
    by ranges.  filelock's wheel is smaller than that read, so its range is the whole file;
    answered 200, uv took the index for one without ranges and downloaded the rest whole
    (torch's nvidia-* wheels, up to 732 MB each: 1.8 GB into the store).  Where PyPI lists
    them, nothing is read by ranges and the test holds as well."""
    data = tmp_path / "data"
    with Proxy(data_dir=data) as proxy:
        resolved = uv_compile(proxy.index(PIN), ["torch==2.1.0"], python_version="3.11",
                              extra_args=["--python-platform", "x86_64-manylinux_2_28"])
    assert resolved["torch"] == "2.1.0" and resolved["nvidia-cudnn-cu12"] == "8.9.2.26"
    assert resolved["filelock"] == "3.13.1"
    stored = sum(f.stat().st_size for f in (data / "blobs").rglob("*") if f.is_file())
    assert stored < 5_000_000, f"{stored} bytes stored: wheels were downloaded whole"
