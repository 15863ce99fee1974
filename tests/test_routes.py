"""Path-mode and forward-mode routing: what each URL of DESIGN.md "Path mode URLs" and
PROTOCOL.md "URL layout" / "Status codes and redirects" means."""

from __future__ import annotations

import pytest

from datepin.routes import (
    File,
    JsonApi,
    Project,
    Redirect,
    Reject,
    Root,
    Route,
    UpstreamFile,
    route_forward,
    route_path,
    route_registry_forward,
)

SHA = "ab" * 32
PIN = "2023-11-18"


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("HEAD", f"/{PIN}/simple/alpha/", Project(PIN, "pypi", "alpha")),
        ("GET", f"/{PIN}/alpha/", Project(PIN, "pypi", "alpha")),
        ("GET", f"/{PIN}/simple/", Root(PIN, "pypi")),
        ("GET", f"/{PIN}/simple", Redirect(f"/{PIN}/simple/")),
        ("GET", f"/{PIN}/simple/alpha", Redirect(f"/{PIN}/simple/alpha/")),
        ("GET", f"/{PIN}/simple/Alpha/?a=1", Redirect(f"/{PIN}/simple/alpha/?a=1")),
        ("GET", f"/{PIN}/r/corp/simple/Alpha/", Redirect(f"/{PIN}/r/corp/simple/alpha/")),
        ("GET", f"/{PIN}/r/Corp!/alpha/", Reject),
        ("GET", f"/{PIN}/files/", Reject),
        ("GET", f"/{PIN}/pypi/", Reject),
        ("GET", "/favicon.ico", Reject),
        ("GET", f"/{PIN}/pypi/alpha/json", JsonApi(PIN, "pypi", "alpha", None)),
        ("GET", f"/{PIN}/pypi/alpha/1.0/json", JsonApi(PIN, "pypi", "alpha", "1.0")),
        ("GET", f"/{PIN}/pypi/alpha/1.0/x/json", Reject),
        ("GET", f"/{PIN}/pypi/alpha/1.0/", Reject),
        ("GET", f"/{PIN}/pypi/Alpha/1.0/json?x=1", Redirect(f"/{PIN}/pypi/alpha/1.0/json?x=1")),
        # Segments are decoded: a CR LF in them or in the query must not end the header.
        ("GET", "/2023%0d%0aX:%20y/simple/Alpha/", Redirect("/2023%0D%0AX:%20y/simple/alpha/")),
        ("GET", f"/{PIN}/simple/Alpha/?a\r\nb", Redirect(f"/{PIN}/simple/alpha/?a%0D%0Ab")),
        ("GET", f"/files/pypi/{SHA}/a-1.0.whl", File("pypi", SHA, "a-1.0.whl", False)),
        ("HEAD", f"/files/pypi/{SHA}/a-1.0.whl.metadata", File("pypi", SHA, "a-1.0.whl", True)),
        ("GET", f"/files/pypi/{SHA}/.metadata", Reject),
        ("GET", f"/files/pypi/{SHA}/a/b.whl", Reject),
        ("GET", f"/files/pypi/{SHA}/a%00b.whl", Reject),
    ],
)
def test_path_mode_routes(method: str, path: str, route: Route | type[Reject]) -> None:
    got = route_path(method, path)
    assert isinstance(got, Reject) if route is Reject else got == route


@pytest.mark.parametrize(
    ("host", "path", "route"),
    [
        ("pypi.org", "/simple/", Root("", "pypi")),
        ("pypi.org", "/simple", Redirect("/simple/")),
        ("pypi.org", "/simple/alpha", Redirect("/simple/alpha/")),
        ("pypi.org", "/simple/Alpha/", Redirect("/simple/alpha/")),
        ("pypi.org", "/simple/a!b/", Reject),
        ("pypi.org", "/pypi/alpha/1.0/json", JsonApi("", "pypi", "alpha", "1.0")),
        (
            "files.pythonhosted.org",
            "/packages/ab/cd/a-1.0.whl?x=1",
            UpstreamFile("https://files.pythonhosted.org/packages/ab/cd/a-1.0.whl"),
        ),
    ],
)
def test_forward_routes(host: str, path: str, route: Route | type[Reject]) -> None:
    got = route_forward("GET", host, path, index_host=host == "pypi.org")
    assert isinstance(got, Reject) if route is Reject else got == route


CPU = "https://t.example/whl/cpu/"
GITLAB = "https://git.example/api/v4/projects/group%2Fproject/packages/pypi/simple/"


@pytest.mark.parametrize(
    ("base", "url", "route"),
    [
        (CPU, CPU, Root("", "corp")),
        (CPU, CPU + "torch/", Project("", "corp", "torch")),
        (CPU, CPU + "Torch/?a", Redirect("/whl/cpu/torch/?a")),
        (CPU, CPU + "torch-2.0.whl", UpstreamFile(CPU + "torch-2.0.whl")),
        (CPU, CPU + "../../secret.whl", Reject),
        (GITLAB, GITLAB + "alpha/", Project("", "corp", "alpha")),
        (
            GITLAB,
            GITLAB + "Alpha/",
            Redirect("/api/v4/projects/group%2Fproject/packages/pypi/simple/alpha/"),
        ),
    ],
)
def test_intercepted_registry_routes(base: str, url: str, route: Route | type[Reject]) -> None:
    got = route_registry_forward("GET", "corp", base, url)
    assert isinstance(got, Reject) if route is Reject else got == route
