"""`datepin ca` and `datepin env`: what they print, and that what they print works."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from mitmproxy.certs import CertStore

from clients import pip_resolve, uv_compile
from scripted import self_signed_cert
from datepin import ca as ca_module
from datepin.ca import ensure_ca
from datepin.cli import main

CERT = "-----BEGIN CERTIFICATE-----"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"DATEPIN_CONFIG": None, **(env or {})})
    return result.exit_code, result.output


def exports(text: str) -> dict[str, str]:
    """Run the printed lines in a shell (so they must be valid shell) and read the result."""
    proc = subprocess.run(
        ["bash", "-c", text + "\nenv -0"], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin"}, cwd="/tmp",
    )
    variables = dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    names = ("HTTPS_PROXY", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "PIP_INDEX_URL",
             "UV_DEFAULT_INDEX", "PDM_PYPI_URL", "PIP_TRUSTED_HOST", "UV_INSECURE_HOST",
             "PDM_PYPI_VERIFY_SSL")
    return {k: v for k, v in variables.items() if k in names}


# -- datepin ca --------------------------------------------------------------------------------


def test_ca_prints_the_path_and_creates_the_ca_once_and_privately(tmp_path):
    code, out = invoke("ca", "--data-dir", str(tmp_path / "d"))
    assert code == 0
    cert = Path(out.strip())
    assert cert == tmp_path / "d" / "ca" / "mitmproxy-ca-cert.pem"
    assert cert.read_text().startswith(CERT)
    assert stat.S_IMODE(cert.parent.stat().st_mode) == 0o700
    for key in ("mitmproxy-ca.pem", "mitmproxy-ca.p12"):
        assert stat.S_IMODE((cert.parent / key).stat().st_mode) == 0o600
    first = cert.read_text()
    assert invoke("ca", "--data-dir", str(tmp_path / "d"))[0] == 0
    assert cert.read_text() == first  # not re-created
    code, pem = invoke("ca", "--data-dir", str(tmp_path / "d"), "--pem")
    assert code == 0 and pem == first


def test_a_ca_asked_for_by_two_processes_at_once_is_made_once(tmp_path, monkeypatch):
    """`datepin serve` and `datepin ca --bundle` started together on a fresh data directory:
    each must end up with the CA that stays on disk, or the bundle does not trust the proxy."""
    both_creating = threading.Barrier(2)
    create = CertStore.create_store
    made: list[str] = []

    def create_slowly(*args, **kwargs):  # the key takes a while to make: both are at it
        made.append(threading.current_thread().name)
        try:
            both_creating.wait(timeout=1)
        except threading.BrokenBarrierError:
            pass  # the other caller waits for this one to finish
        create(*args, **kwargs)

    monkeypatch.setattr(CertStore, "create_store", staticmethod(create_slowly))
    ca_dir = tmp_path / "d" / "ca"
    seen: list[str] = []

    def ask() -> None:
        seen.append(ensure_ca(ca_dir).read_text())

    callers = [threading.Thread(target=ask) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    key = ca_dir / "mitmproxy-ca.pem"
    assert len(made) == 1, f"two CAs made, one overwritten: {made}"
    assert seen == [(ca_dir / "mitmproxy-ca-cert.pem").read_text()] * 2
    assert seen[0] in key.read_text()  # the key on disk is the one the certificate names
    assert sorted(p.name for p in ca_dir.iterdir() if p.name.startswith(".")) in ([], [".lock"])

def test_a_ca_cut_short_while_being_made_is_made_again(tmp_path, monkeypatch):
    """A `datepin serve` killed while writing its new CA must not leave a half-written key
    that stops every later start with 'cannot create or read the CA'."""

    def killed_while_writing(path, basename, *args, **kwargs):
        (path / f"{basename}-ca.pem").write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nMIIE")
        raise KeyboardInterrupt  # stands for the kill: nothing after this runs

    ca_dir = tmp_path / "d" / "ca"
    with monkeypatch.context() as patched:
        patched.setattr(CertStore, "create_store", staticmethod(killed_while_writing))
        with pytest.raises(KeyboardInterrupt):
            ensure_ca(ca_dir)
    cert = ensure_ca(ca_dir)
    assert cert.read_text().startswith(CERT)

def test_a_ca_cut_short_while_its_files_are_moved_in_is_made_again(tmp_path, monkeypatch):
    """Killed between moving the new CA's files into place: the private key goes last, so
    the next start finds no CA and makes one whole, never a key without its certificate."""
    moved: list[str] = []
    replace = os.replace

    def killed_after_the_first(src, dst):
        if moved:
            raise KeyboardInterrupt  # stands for the kill
        moved.append(Path(dst).name)
        replace(src, dst)

    ca_dir = tmp_path / "d" / "ca"
    with monkeypatch.context() as patched:
        patched.setattr(ca_module.os, "replace", killed_after_the_first)
        with pytest.raises(KeyboardInterrupt):
            ensure_ca(ca_dir)
    cert = ensure_ca(ca_dir)
    assert cert.read_text().startswith(CERT)
    assert cert.read_text() in (ca_dir / "mitmproxy-ca.pem").read_text()


def test_ca_reads_the_data_dir_from_the_config(tmp_path):
    config = tmp_path / "proxy.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "from-config"}"\n')
    code, out = invoke("ca", "--config", str(config))
    assert code == 0 and out.strip().startswith(str(tmp_path / "from-config" / "ca"))


def test_ca_bundle_is_the_system_cas_plus_datepins(tmp_path):
    system, _ = self_signed_cert(tmp_path / "system")  # any certificate will do as "the system CAs"
    env = {"SSL_CERT_FILE": str(system), "REQUESTS_CA_BUNDLE": None}
    code, out = invoke("ca", "--data-dir", str(tmp_path / "d"), "--bundle", str(tmp_path / "b.pem"), env=env)
    assert code == 0 and Path(out.strip()) == tmp_path / "b.pem"
    ca = (tmp_path / "d" / "ca" / "mitmproxy-ca-cert.pem").read_text()
    bundle = (tmp_path / "b.pem").read_text()
    assert bundle.startswith(system.read_text().strip()) and bundle.rstrip().endswith(ca.strip())
    assert bundle.count(CERT) == 2

    # Bundling again from a bundle (SSL_CERT_FILE already names it) does not repeat the CA.
    code, again = invoke("ca", "--data-dir", str(tmp_path / "d"), "--bundle", "-",
                         env={"SSL_CERT_FILE": str(tmp_path / "b.pem")})
    assert code == 0 and again.count(CERT) == 2 and again.count(ca.strip()) == 1

    code, out = invoke("ca", "--data-dir", str(tmp_path / "d"), "--pem", "--bundle", "-")
    assert code == 2 and "choose one" in out


def test_ca_bundle_made_from_another_datepins_bundle_trusts_only_this_datepin(tmp_path):
    plain, _ = self_signed_cert(tmp_path / "system")
    env = {"SSL_CERT_FILE": str(plain), "REQUESTS_CA_BUNDLE": None}
    assert invoke("ca", "--data-dir", str(tmp_path / "other"), "--bundle", str(tmp_path / "other.pem"), env=env)[0] == 0
    code, bundle = invoke("ca", "--data-dir", str(tmp_path / "d"), "--bundle", "-",
                          env={"SSL_CERT_FILE": str(tmp_path / "other.pem"), "REQUESTS_CA_BUNDLE": None})
    other = (tmp_path / "other" / "ca" / "mitmproxy-ca-cert.pem").read_text().strip()
    this = (tmp_path / "d" / "ca" / "mitmproxy-ca-cert.pem").read_text().strip()
    assert code == 0 and other not in bundle and this in bundle
    assert plain.read_text().strip() in bundle and bundle.count(CERT) == 2


def test_ca_bundle_without_a_named_bundle_takes_the_systems_cas_before_certifis(monkeypatch):
    import certifi

    from datepin.ca import SYSTEM_BUNDLES, system_ca_file

    found = system_ca_file({})
    assert found is not None and found.is_file()
    if any(Path(p).is_file() for p in SYSTEM_BUNDLES):
        assert found != Path(certifi.where())
    # With no system bundle anywhere, certifi's.
    monkeypatch.setattr("datepin.ca.SYSTEM_BUNDLES", ())
    monkeypatch.setattr("ssl.get_default_verify_paths", lambda: type("P", (), {"openssl_cafile": None})())
    assert system_ca_file({}) == Path(certifi.where())


# -- datepin env -------------------------------------------------------------------------------


def test_env_path_mode(tmp_path):
    code, out = invoke("env", "--data-dir", str(tmp_path), "--pin", "2023-11-18")
    assert code == 0
    index = "http://127.0.0.1:8080/2023-11-18/simple/"
    assert exports(out) == {"PIP_INDEX_URL": index, "UV_DEFAULT_INDEX": index, "PDM_PYPI_URL": index}
    assert f"poetry source add --priority=primary datepin {index}" in out
    assert "ARG PIP_INDEX_URL=http://host.docker.internal:8080/2023-11-18/simple/" in out
    assert "cutoff 2023-11-18T00:00:00Z" in out
    assert not (tmp_path / "ca").exists()  # path mode needs no CA

    code, out = invoke("env", "--pin", "live", "--proxy", "http://10.1.2.3:3128")
    assert code == 0
    assert exports(out)["PIP_TRUSTED_HOST"] == "10.1.2.3"
    assert exports(out)["UV_INSECURE_HOST"] == "10.1.2.3:3128"


def test_env_uses_the_configured_listen_address(tmp_path):
    config = tmp_path / "proxy.toml"
    config.write_text('[server]\nlisten = "0.0.0.0:9999"\n')
    code, out = invoke("env", "--config", str(config), "--pin", "2023-11-18")
    assert code == 0 and exports(out)["PIP_INDEX_URL"] == "http://127.0.0.1:9999/2023-11-18/simple/"


def test_env_forward_mode(tmp_path):
    code, out = invoke("env", "--data-dir", str(tmp_path), "--pin", "2023-11-18", "--mode", "forward")
    assert code == 0
    values = exports(out)
    bundle = tmp_path / "ca" / "datepin-ca-bundle.pem"
    assert values == {
        "HTTPS_PROXY": "http://2023-11-18:x@127.0.0.1:8080",
        "PIP_CERT": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "SSL_CERT_FILE": str(bundle),
    }
    ca = (tmp_path / "ca" / "mitmproxy-ca-cert.pem").read_text()
    assert ca.strip() in bundle.read_text()
    assert "--build-arg HTTPS_PROXY=http://2023-11-18:x@host.docker.internal:8080" in out
    assert "ARG SSL_CERT_FILE=" in out and "COPY datepin-ca-bundle.pem" in out

    # A timestamp has ':' in it, which a user name can't carry: it goes in the password.
    code, out = invoke("env", "--data-dir", str(tmp_path), "--pin", "2023-11-18T14:05:00Z",
                       "--mode", "forward", "--proxy", "http://proxy.internal:8080")
    assert code == 0
    values = exports(out)
    assert values["HTTPS_PROXY"] == "http://pin:2023-11-18T14%3A05%3A00Z@proxy.internal:8080"
    assert values["SSL_CERT_FILE"] == "/tmp/datepin-ca-bundle.pem"  # "$PWD/...": made elsewhere
    assert "datepin ca --bundle datepin-ca-bundle.pem" in out


def test_env_keeps_the_overrides_of_a_pin_as_written(tmp_path):
    # `,` and `=` need no escaping in a URL path or in userinfo (RFC 3986 sub-delims), and
    # pip and uv send them as written.
    code, out = invoke("env", "--data-dir", str(tmp_path), "--pin", "2018-06-01,Setuptools=live")
    assert code == 0
    index = "http://127.0.0.1:8080/2018-06-01,setuptools=live/simple/"
    assert exports(out)["PIP_INDEX_URL"] == index and exports(out)["UV_DEFAULT_INDEX"] == index
    code, out = invoke("env", "--data-dir", str(tmp_path), "--pin", "2018-06-01,setuptools=live",
                       "--mode", "forward")
    assert code == 0
    assert exports(out)["HTTPS_PROXY"] == "http://2018-06-01,setuptools=live:x@127.0.0.1:8080"
    code, out = invoke("env", "--pin", "2018-06-01,setuptools", "--data-dir", str(tmp_path))
    assert code != 0 and "<pin>[,<project>=<pin>]..." in out


def test_env_and_ca_name_the_ca_by_an_absolute_path_for_a_relative_data_dir(tmp_path, monkeypatch):
    """Pasted in another directory (the project's), the printed paths still name the CA."""
    monkeypatch.chdir(tmp_path)
    code, out = invoke("env", "--data-dir", "data", "--pin", "2023-11-18", "--mode", "forward")
    assert code == 0
    bundle = str(tmp_path / "data" / "ca" / "datepin-ca-bundle.pem")
    values = exports(out)  # run in another directory
    assert values["PIP_CERT"] == values["REQUESTS_CA_BUNDLE"] == values["SSL_CERT_FILE"] == bundle
    code, out = invoke("ca", "--data-dir", "data")
    assert code == 0 and out.strip() == str(tmp_path / "data" / "ca" / "mitmproxy-ca-cert.pem")


@pytest.mark.parametrize(("pin", "reason"), [("2023-13-45", "YYYY-MM-DD"), ("2999-01-01", "future")])
def test_env_validates_the_pin(pin, reason):
    code, out = invoke("env", "--pin", pin)
    assert code == 2 and reason in out and "--pin" in out


def test_env_validates_the_proxy_url():
    code, out = invoke("env", "--pin", "live", "--proxy", "ftp://x")
    assert code == 2 and "http://127.0.0.1:8080" in out


def test_what_env_prints_for_forward_mode_works_with_pip_and_uv(fake_pypi, proxy):
    fake_pypi.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
    fake_pypi.add_wheel("beta", "2.0", upload_time="2023-05-01T10:00:00Z")
    code, out = invoke("env", "--data-dir", str(proxy.data_dir), "--pin", "2023-03-01",
                       "--mode", "forward", "--proxy", proxy.url)
    assert code == 0
    values = exports(out)
    assert pip_resolve("https://pypi.org/simple/", ["beta"], env_extra=values) == {"beta": "1.0"}
    assert uv_compile("https://pypi.org/simple/", ["beta"], env_extra=values) == {"beta": "1.0"}


# -- what `datepin env` prints for path mode, used as printed -----------------------------------


def _loopback_name() -> str | None:
    """A host name other than localhost that resolves to a loopback address (this machine's
    own name usually does): clients treat it as any remote host."""
    import socket

    name = socket.gethostname()
    try:
        addr = socket.gethostbyname(name)
    except OSError:
        return None
    return name if addr.startswith("127.") and name not in ("localhost",) else None


@pytest.mark.parametrize("host", ["127.0.0.1", "by-name"])
@pytest.mark.parametrize("pin", ["2023-03-01", "2023-03-01T12:00:00+02:00"])
def test_what_env_prints_for_path_mode_works_with_pip_uv_and_pdm(fake_pypi, proxy, tmp_path, host, pin):
    import json
    import sys
    import tomllib

    from clients import run, uv_bin, parse_pins

    if host == "by-name":
        host = _loopback_name() or pytest.skip("no host name resolving to 127.x")
    fake_pypi.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
    fake_pypi.add_wheel("beta", "2.0", upload_time="2023-05-01T10:00:00Z")
    code, out = invoke("env", "--pin", pin, "--proxy", f"http://{host}:{proxy.port}")
    assert code == 0, out
    values = exports(out)

    report = tmp_path / "report.json"
    run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
         "--report", str(report), "beta"], env_extra=values)
    assert [i["metadata"]["version"] for i in json.loads(report.read_text())["install"]] == ["1.0"]

    proc = run([uv_bin(), "pip", "compile", "-", "--no-header", "--no-annotate"],
               env_extra=values, input="beta\n")
    assert parse_pins(proc.stdout) == {"beta": "1.0"}

    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.12"\n'
        'dependencies = ["beta"]\n')
    home = tmp_path / "home"
    pdm_env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "c"), "XDG_CACHE_HOME": str(home / "k"),
               "XDG_DATA_HOME": str(home / "d"), "PDM_CHECK_UPDATE": "false",
               "PDM_NON_INTERACTIVE": "1", "PDM_PYTHON": sys.executable,
               "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    run([str(Path(sys.executable).parent / "pdm"), "lock"], cwd=demo, env_extra={**pdm_env, **values})
    packages = tomllib.loads((demo / "pdm.lock").read_text())["package"]
    assert {p["name"]: p["version"] for p in packages} == {"beta": "1.0"}


@pytest.mark.parametrize("mode", ["path", "forward"])
def test_env_dockerfile_lines_bracket_an_ipv6_proxy_address(tmp_path, mode):
    from urllib.parse import urlsplit

    code, out = invoke("env", "--data-dir", str(tmp_path), "--pin", "2023-11-18", "--mode", mode,
                       "--proxy", "http://[fd00::5]:8080")
    assert code == 0, out
    urls = [word.split("=", 1)[-1].strip("'\"") for line in out.splitlines() for word in line.split()
            if "http://" in word]
    assert urls
    for url in urls:  # every URL printed, shell or Dockerfile, names the proxy it was given
        parts = urlsplit(url)
        assert (parts.hostname, parts.port) == ("fd00::5", 8080), url
    if mode == "path":
        assert "ARG UV_INSECURE_HOST=[fd00::5]:8080" in out and "ARG PDM_PYPI_VERIFY_SSL=false" in out


@pytest.mark.parametrize("shell", ["bash", "sh"])
@pytest.mark.parametrize("args", [
    ["--pin", "2023-11-18"],
    ["--pin", "2023-11-18T14:05:00.5-03:30", "--proxy", "http://[::1]:18128"],
    ["--pin", "live", "--proxy", "http://10.1.2.3:3128"],
    ["--pin", "2023-11-18", "--mode", "forward"],
    ["--pin", "2023-11-18T14:05:00+02:00", "--mode", "forward", "--proxy", "http://proxy.internal:8080"],
])
def test_env_output_can_be_evaluated_whole(tmp_path, shell, args):
    """`eval "$(datepin env ...)"`: every line printed is shell; nothing fails or complains."""
    data = tmp_path / "a dir with 'quotes' and spaces"
    code, out = invoke("env", "--data-dir", str(data), *args)
    assert code == 0, out
    proc = subprocess.run([shell, "-euc", 'eval "$1"; echo "${PIP_CERT:-}${PIP_INDEX_URL:-}"', "sh", out],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PWD": "/tmp"}, cwd="/tmp")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr if "PIP_CERT" in out else None


@pytest.mark.parametrize("pin", ["2023-03-01T12:00:00+02:00", "2023-03-01T12:00:00.25-03:30"])
def test_what_env_prints_for_forward_mode_with_an_offset_timestamp(fake_pypi, proxy, pin):
    fake_pypi.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
    fake_pypi.add_wheel("beta", "2.0", upload_time="2023-05-01T10:00:00Z")
    code, out = invoke("env", "--data-dir", str(proxy.data_dir), "--pin", pin,
                       "--mode", "forward", "--proxy", proxy.url)
    assert code == 0
    values = exports(out)
    assert pip_resolve("https://pypi.org/simple/", ["beta"], env_extra=values) == {"beta": "1.0"}
    assert uv_compile("https://pypi.org/simple/", ["beta"], env_extra=values) == {"beta": "1.0"}
