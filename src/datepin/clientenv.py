"""What `datepin env` prints: shell exports and a Dockerfile snippet for pip, uv, Poetry and PDM.

Pure: values in, text out.  Which variable each client reads (checked against the clients):

- pip: `PIP_INDEX_URL`; CA: `REQUESTS_CA_BUNDLE` wins over `PIP_CERT`, so both.
- uv: `UV_DEFAULT_INDEX`; CA: `SSL_CERT_FILE` (uv 0.13 adds no other variable for it).
- Poetry: sources live in pyproject.toml only; CA through requests: `REQUESTS_CA_BUNDLE`.
- PDM: `PDM_PYPI_URL`, plus `PDM_PYPI_VERIFY_SSL=false` for plain HTTP to a host other than
  localhost, 127.0.0.0/8 or ::1 (unearth skips such pages as untrusted otherwise); CA:
  `REQUESTS_CA_BUNDLE` (else truststore, which reads `SSL_CERT_FILE`).
- Forward mode: `HTTPS_PROXY` with the pin as the proxy user name (or password).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from datepin.pins import Pin, format_time

Mode = Literal["path", "forward"]
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
DOCKER_HOST = "host.docker.internal"
DOCKER_CA = "/etc/datepin-ca-bundle.pem"
BUNDLE_NAME = "datepin-ca-bundle.pem"


@dataclass(frozen=True)
class ProxyAddress:
    host: str
    port: int

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK


def parse_proxy_url(text: str) -> ProxyAddress:
    """`http://HOST:PORT` (a trailing slash is fine) -> ProxyAddress; raises ValueError."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{text!r} is not a proxy URL like http://127.0.0.1:8080")
    if parts.username or parts.password or parts.query:
        raise ValueError(f"{text!r}: give the proxy URL without credentials or query")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{text!r} has a bad port") from None
    return ProxyAddress(parts.hostname, port)


def listen_address(host: str, port: int) -> ProxyAddress:
    """Where a client on this machine reaches a proxy listening on host:port."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return ProxyAddress(host, port)


def proxy_credentials(pin: Pin) -> str:
    """`user:password` naming the pin: the pin as the user name, or as the password when it
    contains ':' (a timestamp), since a user name cannot (RFC 7617)."""
    if ":" in pin.text:
        return "pin:" + _escaped(pin)
    return f"{_escaped(pin)}:x"


def _escaped(pin: Pin) -> str:
    """A pin in a URL's path or userinfo: the `,` and `=` of its overrides as written (both
    may stand there unescaped, RFC 3986, and pip and uv send them so)."""
    return quote(pin.text, safe=",=")


def render(pin: Pin, mode: Mode, proxy: ProxyAddress, bundle: str | None = None) -> str:
    header = [f"# datepin {mode} mode, pin {pin.text}" + (
        f" (cutoff {format_time(pin.cutoff)})" if pin.cutoff else " (today's index)"
    )]
    if mode == "path":
        shell, docker = _path_exports(pin, proxy), _path_docker(pin, proxy)
    else:
        shell, docker = _forward_exports(pin, proxy, bundle), _forward_docker(pin, proxy)
    # The whole output is shell (`eval "$(datepin env ...)"`): the Dockerfile lines are comments.
    docker = [line if line.startswith("#") else f"# {line}" for line in docker]
    return "\n".join(header + shell + [""] + docker) + "\n"


def _export(name: str, value: str, comment: str = "", *, raw: bool = False) -> str:
    line = f"export {name}={value if raw else shlex.quote(value)}"
    return f"{line}  # {comment}" if comment else line


def _index(pin: Pin, proxy: ProxyAddress) -> str:
    return f"{proxy.url}/{_escaped(pin)}/simple/"


def _path_exports(pin: Pin, proxy: ProxyAddress) -> list[str]:
    index = _index(pin, proxy)
    lines = [
        _export("PIP_INDEX_URL", index, "pip"),
        _export("UV_DEFAULT_INDEX", index, "uv"),
        _export("PDM_PYPI_URL", index, "PDM"),
    ]
    if not proxy.is_loopback:
        # Plain HTTP is accepted without a flag only for 127.0.0.1 / localhost.
        lines += [
            _export("PIP_TRUSTED_HOST", proxy.host, "pip: plain HTTP"),
            _export("UV_INSECURE_HOST", proxy.netloc, "uv: plain HTTP"),
            _export("PDM_PYPI_VERIFY_SSL", "false", "PDM: plain HTTP"),
        ]
    lines += [
        "# Poetry reads its sources from pyproject.toml only:",
        f"#   poetry source add --priority=primary datepin {index}",
    ]
    return lines


def _docker_proxy(proxy: ProxyAddress) -> ProxyAddress:
    """Where a container reaches the proxy."""
    return ProxyAddress(DOCKER_HOST, proxy.port) if proxy.is_loopback else proxy


def _path_docker(pin: Pin, proxy: ProxyAddress) -> list[str]:
    there = _docker_proxy(proxy)
    index = f"{there.url}/{_escaped(pin)}/simple/"
    lines = ["# Dockerfile (path mode):"]
    if proxy.is_loopback:
        lines += _docker_reach_note(proxy)
    lines += [
        "# Build args are in the environment of RUN steps and not kept in the image.",
        f"ARG PIP_INDEX_URL={index}",
        f"ARG PIP_TRUSTED_HOST={there.host}",
        f"ARG UV_DEFAULT_INDEX={index}",
        f"ARG UV_INSECURE_HOST={there.netloc}",
        f"ARG PDM_PYPI_URL={index}",
        "ARG PDM_PYPI_VERIFY_SSL=false",
        "RUN pip install -r requirements.txt   # or: uv pip install / pdm install",
    ]
    return lines


def _forward_exports(pin: Pin, proxy: ProxyAddress, bundle: str | None) -> list[str]:
    proxy_url = f"http://{proxy_credentials(pin)}@{proxy.netloc}"
    lines: list[str] = []
    if bundle:
        ca = shlex.quote(bundle)
    else:
        lines.append(f"# first, where datepin runs: datepin ca --bundle {BUNDLE_NAME}; copy it here")
        ca = f'"$PWD/{BUNDLE_NAME}"'
    lines += [
        _export("HTTPS_PROXY", proxy_url, "pypi.org and files.pythonhosted.org at the pin"),
        _export("PIP_CERT", ca, "pip", raw=True),
        _export("REQUESTS_CA_BUNDLE", ca, "pip (wins over PIP_CERT), Poetry, PDM", raw=True),
        _export("SSL_CERT_FILE", ca, "uv", raw=True),
        "# Index URL: leave the default (https://pypi.org/simple/); unset PIP_INDEX_URL,",
        "# UV_INDEX_URL, UV_DEFAULT_INDEX and PDM_PYPI_URL if they point elsewhere.",
    ]
    return lines


def _forward_docker(pin: Pin, proxy: ProxyAddress) -> list[str]:
    proxy_url = f"http://{proxy_credentials(pin)}@{_docker_proxy(proxy).netloc}"
    lines = ["# Dockerfile (forward mode):"]
    if proxy.is_loopback:
        lines += _docker_reach_note(proxy)
    lines += [
        f"#   datepin ca --bundle {BUNDLE_NAME}   # next to the Dockerfile",
        f"#   docker build --build-arg HTTPS_PROXY={proxy_url} .",
        "# HTTPS_PROXY is one of Docker's predefined build args: RUN steps see it, the image",
        "# does not keep it.  The CA variables are build args for the same reason.",
        f"COPY {BUNDLE_NAME} {DOCKER_CA}",
        f"ARG PIP_CERT={DOCKER_CA}",
        f"ARG REQUESTS_CA_BUNDLE={DOCKER_CA}",
        f"ARG SSL_CERT_FILE={DOCKER_CA}",
        "RUN pip install -r requirements.txt   # or: uv pip install / poetry install / pdm install",
    ]
    return lines


def _docker_reach_note(proxy: ProxyAddress) -> list[str]:
    return [
        f"#   containers reach this machine as {DOCKER_HOST}: run datepin with",
        f"#   --listen 172.17.0.1:{proxy.port} (docker0) or 0.0.0.0:{proxy.port}, and on Linux",
        f"#   build with --add-host={DOCKER_HOST}:host-gateway",
    ]
