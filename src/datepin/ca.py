"""datepin's certificate authority for forward mode (DESIGN.md "Forward mode").

The CA lives in `<data_dir>/ca` in mitmproxy's own layout (mitmproxy reads it as its confdir),
is created once, and its private key stays 0600 in a 0700 directory.  Clients trust it through
a bundle: the system CAs (they still need those for every host datepin tunnels untouched) plus
datepin's CA, for `PIP_CERT`, `REQUESTS_CA_BUNDLE` and `SSL_CERT_FILE`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

BASENAME = "mitmproxy"  # mitmproxy looks for <confdir>/mitmproxy-ca.pem
KEY_SIZE = 2048
CERT_FILE = f"{BASENAME}-ca-cert.pem"
SECRET_FILES = (f"{BASENAME}-ca.pem", f"{BASENAME}-ca.p12")  # hold the private key
CA_NAME = "datepin forward-mode CA"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class CAError(OSError):
    pass


def ensure_ca(ca_dir: Path) -> Path:
    """Create the CA in `ca_dir` unless it is there; fix permissions; return the cert's path."""
    from mitmproxy.certs import CertStore

    try:
        ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca_dir.chmod(0o700)
        if not (ca_dir / SECRET_FILES[0]).exists():
            # mitmproxy would create the same files, but name the CA "mitmproxy".
            CertStore.create_store(ca_dir, BASENAME, KEY_SIZE, organization="datepin", cn=CA_NAME)
        CertStore.from_store(ca_dir, BASENAME, KEY_SIZE)  # reads it: fails on a broken CA
        for name in SECRET_FILES:
            if (ca_dir / name).exists():
                (ca_dir / name).chmod(0o600)
    except (OSError, ValueError) as e:
        raise CAError(f"cannot create or read the CA in {ca_dir}: {e}") from None
    return ca_dir / CERT_FILE


def system_ca_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The CA bundle clients would use without datepin: SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
    certifi's, or the Debian/Ubuntu system bundle."""
    for key in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        if (value := environ.get(key)) and os.path.isfile(value):
            return Path(value)
    try:
        import certifi

        return Path(certifi.where())
    except ImportError:
        pass
    return SYSTEM_BUNDLE if SYSTEM_BUNDLE.is_file() else None


def make_bundle(system: str, ca_pem: str) -> str:
    """System CAs followed by datepin's CA, once (re-bundling a bundle does not repeat it)."""
    ca_pem = ca_pem.strip() + "\n"
    system = system.replace(ca_pem, "").rstrip()
    header = "# datepin CA (forward mode)\n"
    system = system.replace(header.strip(), "").rstrip()
    parts = [system + "\n\n"] if system else []
    return "".join(parts) + header + ca_pem


def bundle_text(ca_cert: Path, environ: Mapping[str, str] = os.environ) -> str:
    system_file = system_ca_file(environ)
    system = system_file.read_text() if system_file else ""
    return make_bundle(system, ca_cert.read_text())
