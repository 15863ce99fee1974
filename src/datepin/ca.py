"""datepin's certificate authority for forward mode (DESIGN.md "Forward mode").

The CA lives in `<data_dir>/ca` in mitmproxy's own layout (mitmproxy reads it as its confdir),
is created once, and its private key stays 0600 in a 0700 directory.  Clients trust it through
a bundle: the system CAs (they still need those for every host datepin tunnels untouched) plus
datepin's CA, for `PIP_CERT`, `REQUESTS_CA_BUNDLE` and `SSL_CERT_FILE`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from datepin.upstream import ca_file

if TYPE_CHECKING:  # imported when needed: `datepin env` and `datepin ca --pem` start faster
    from mitmproxy.certs import CertStore

BASENAME = "mitmproxy"  # mitmproxy looks for <confdir>/mitmproxy-ca.pem
KEY_SIZE = 2048
CERT_FILE = f"{BASENAME}-ca-cert.pem"
SECRET_FILES = (f"{BASENAME}-ca.pem", f"{BASENAME}-ca.p12")  # hold the private key
CA_NAME = "datepin forward-mode CA"
# Where systems keep their CA bundle, for interpreters whose OpenSSL looks elsewhere (uv's and
# python.org's builds bring their own).
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Gentoo
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # Fedora, RHEL, CentOS
    "/etc/pki/tls/certs/ca-bundle.crt",  # older RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine, macOS
)
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----\n?")


class CAError(OSError):
    pass


def ensure_ca(ca_dir: Path) -> Path:
    """Create the CA in `ca_dir` unless it is there; fix permissions; return the cert's path."""
    from mitmproxy.certs import CertStore

    try:
        ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca_dir.chmod(0o700)
        # One process at a time (`datepin serve` and `datepin ca` started together on a
        # fresh data directory would each make a CA, and keep the one the other overwrote).
        with _locked(ca_dir / ".lock"):
            if not (ca_dir / SECRET_FILES[0]).exists():
                _create(ca_dir, CertStore)
            CertStore.from_store(ca_dir, BASENAME, KEY_SIZE)  # reads it: fails on a broken CA
        for name in SECRET_FILES:
            if (ca_dir / name).exists():
                (ca_dir / name).chmod(0o600)
    except (OSError, ValueError) as e:
        raise CAError(f"cannot create or read the CA in {ca_dir}: {e}") from None
    return ca_dir / CERT_FILE


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create(ca_dir: Path, store: type[CertStore]) -> None:
    """Make the CA in a directory of its own inside `ca_dir`, then move its files in, the
    private key (whose presence says the CA exists) last: a process killed half-way leaves
    no CA rather than a broken one."""
    for left in ca_dir.glob(".new-*"):  # by a process killed while making one (we hold the lock)
        shutil.rmtree(left, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".new-", dir=ca_dir))
    try:
        # mitmproxy would create the same files, but name the CA "mitmproxy".
        store.create_store(staging, BASENAME, KEY_SIZE, organization="datepin", cn=CA_NAME)
        for name in sorted(os.listdir(staging), key=lambda n: n == SECRET_FILES[0]):
            os.replace(staging / name, ca_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def system_ca_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The CA bundle clients would use without datepin, as datepin trusts upstream
    (upstream.trust_store): SSL_CERT_FILE or REQUESTS_CA_BUNDLE when set, else the system's
    (OpenSSL's default file, or where the distribution keeps it), else certifi's.  The
    system's comes before certifi's: a company's own CA (an intercepting egress proxy's) is
    added there, and clients need it for every host datepin tunnels untouched."""
    if named := ca_file(environ):
        return Path(named)
    for candidate in (ssl.get_default_verify_paths().openssl_cafile, *SYSTEM_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    try:
        import certifi

        return Path(certifi.where())
    except ImportError:
        return None


def _is_datepin_ca(pem: str) -> bool:
    """Whether this PEM certificate names a datepin CA (its DER holds the name as written)."""
    body = pem.removeprefix("-----BEGIN CERTIFICATE-----").split("-----END", 1)[0]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except ValueError:
        return False
    return CA_NAME.encode() in der


def make_bundle(system: str, ca_pem: str) -> str:
    """System CAs followed by datepin's CA, once.  Any datepin CA already in the system
    bundle goes: re-bundling a bundle does not repeat this one, and one made for another
    datepin (SSL_CERT_FILE still naming it) does not bring that datepin's CA along."""
    ca_pem = ca_pem.strip() + "\n"
    header = "# datepin CA (forward mode)\n"
    system = _PEM_CERT.sub(lambda m: "" if _is_datepin_ca(m.group()) else m.group(), system)
    system = system.replace(header.strip(), "").rstrip()
    parts = [system + "\n\n"] if system else []
    return "".join(parts) + header + ca_pem


def bundle_text(ca_cert: Path, environ: Mapping[str, str] = os.environ) -> str:
    system_file = system_ca_file(environ)
    system = system_file.read_text() if system_file else ""
    return make_bundle(system, ca_cert.read_text())
