"""`datepin serve` and `datepin snapshot` stopped by SIGTERM / SIGINT mid-work."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import storecheck
from fakepypi import FakePyPI
from proxyproc import Proxy, write_config
from test_crash import JSON, OLD, PIN, file_paths, get


def stop_with(proxy: Proxy, sig: signal.Signals) -> tuple[int, float]:
    """Send `sig` to the running proxy; its exit code and how long it took to exit."""
    started = time.monotonic()
    assert proxy.process is not None
    proxy.process.send_signal(sig)
    code = proxy.process.wait(20)
    return code, time.monotonic() - started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_cold_fill_stops_cleanly_and_keeps_what_was_verified(tmp_path: Path, sig) -> None:
    with FakePyPI() as fake:
        done = fake.add_wheel("done", "1.0", upload_time=OLD, payload_size=300_000)
        slow = fake.add_wheel("slow", "1.0", upload_time=OLD, payload_size=300_000)
        fake.fault(re.compile(r"^/files/.*slow.*\.whl$"), "stall_body", times=None, seconds=30)
        config = write_config(tmp_path / "proxy.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url)
        proxy = Proxy(data_dir=tmp_path / "data", config=config).start()
        try:
            for name in ("done", "slow"):
                status, body, _ = get(proxy.port, f"/{PIN}/simple/{name}/", {"Accept": JSON})
                assert status == 200
            [(_, done_path)] = file_paths(get(proxy.port, f"/{PIN}/simple/done/", {"Accept": JSON})[1], proxy.port).items()
            assert get(proxy.port, done_path)[0] == 200
            [(_, slow_path)] = file_paths(get(proxy.port, f"/{PIN}/simple/slow/", {"Accept": JSON})[1], proxy.port).items()
            client = threading.Thread(target=get, args=(proxy.port, slow_path), kwargs={"timeout": 60})
            client.start()
            deadline = time.monotonic() + 10
            while not storecheck.temp_files(tmp_path / "data") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert storecheck.temp_files(tmp_path / "data"), "the slow fill never started"
            code, took = stop_with(proxy, sig)
        finally:
            proxy.kill()
        log = "".join(proxy.log)
        client.join(5)
    assert code == 0, log
    assert "Traceback" not in log, log
    assert took < 5, f"took {took:.1f}s to stop"
    data = tmp_path / "data"
    assert storecheck.stored(data) >= {done.sha256}
    assert slow.sha256 not in storecheck.stored(data)
    assert storecheck.temp_files(data) == []
    assert storecheck.stored_contents_match(data) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_datepin_snapshot_exits_cleanly(tmp_path: Path, sig) -> None:
    with FakePyPI() as fake:
        fake.add_wheel("alpha", "1.0", upload_time=OLD)
        fake.add_wheel("beta", "1.0", upload_time=OLD)
        config = write_config(tmp_path / "proxy.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url)
        cmd = [sys.executable, "-m", "datepin", "snapshot", "--config", str(config),
               "--data-dir", str(tmp_path / "data")]
        subprocess.run([*cmd, "alpha", "beta"], check=True, capture_output=True)
        fake.fault("/simple/beta/", "stall", times=None, seconds=30)
        proc = subprocess.Popen([*cmd, "--all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not fake.requests_for("/simple/beta/")[1:] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    print(proc.returncode, out, err)
    assert "Traceback" not in err, err
    assert proc.returncode in (1, 128 + sig, -sig), (proc.returncode, err)
    for db in storecheck.databases(tmp_path / "data"):
        assert storecheck.integrity(db) == "ok"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_the_servers_own_snapshot(tmp_path: Path, sig) -> None:
    with FakePyPI() as fake:
        fake.add_wheel("beta", "1.0", upload_time=OLD)
        fake.fault("/simple/beta/", "stall", times=None, seconds=30)
        config = write_config(tmp_path / "proxy.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url,
                              extra='[snapshot]\ntrack = ["beta"]\n')
        proxy = Proxy(data_dir=tmp_path / "data", config=config).start()
        try:
            deadline = time.monotonic() + 10
            while not fake.requests_for("/simple/beta/") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fake.requests_for("/simple/beta/")
            code, took = stop_with(proxy, sig)
        finally:
            proxy.kill()
    log = "".join(proxy.log)
    assert code == 0 and "Traceback" not in log and took < 5, (code, took, log)
