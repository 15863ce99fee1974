"""Bad input (issue 8, part 5), pure parts: whatever a client or a config file says, the code
that reads it returns a value or raises its own ValueError subclass, never anything else.

Routes: every Reject is a 4xx; a redirect stays on the proxy and lands on a route that does not
redirect again; a file route names a hex key and a plain file name.  Pins: accepted ones are
aware, UTC, not in the future.  Config: what parse() accepts can run (finite positive timeouts,
bindable listen host, valid project names of declared registries).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from datepin import config as config_module, routes
from datepin.config import Config, ConfigError, load, parse, parse_project
from datepin.fileserver import ByteRange, RangeNotSatisfiable, parse_range
from datepin.pins import PinError, format_time, parse_pin
from datepin.rewrite.negotiate import choose_format
from datepin.runtime import StartupError, prepare_data_dir

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SHA = "ab" * 32

# -- routes ---------------------------------------------------------------------------------------

NASTY_SEGMENTS = [
    "", ".", "..", "%2e%2e", "%2E.", ".%2e", "%2f", "%2F..%2F", "..%5c", "\\", "%5c", "%00",
    "@", "user@evil.test", "127.0.0.1:1", "http:", "https:", "//evil.test", "%252e%252e",
    "simple", "pypi", "r", "files", "-", "json", "live", "2023-11-18", "2999-01-01",
    "2023-11-18T14:05:00Z", "2023-11-18T14:05:00%2B02:00", "Alpha", "alpha", "a_b.C",
    "nümpy", "ａｌｐｈａ", "a" * 300, "1.0", "1.0%3Fx=1", SHA, "u" + "c" * 40, "x.whl", "x.metadata",
    "?", "#", "%3F", "%23", "%0d%0aSet-Cookie:%20x", " ", "~", "*",
]
segment = st.one_of(st.sampled_from(NASTY_SEGMENTS), st.text(max_size=12))
raw_path = st.one_of(
    st.builds(
        lambda segs, slash, query: "/" + "/".join(segs) + ("/" if slash else "") + query,
        st.lists(segment, max_size=6),
        st.booleans(),
        st.sampled_from(["", "?", "?a=b", "?x=%2e%2e/..", "#frag"]),
    ),
    st.text(max_size=40),
)
method = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "get", ""])


@given(method, raw_path)
@example("GET", "/2023-11-18/simple/Alpha")
@example("GET", "//evil.test/simple/")
@example("GET", "/2023-11-18/pypi/Alpha/1.0/json?x=1")
# A file route is 4 exact segments: random draws almost never build one with a smuggled
# separator in its file name, so name the cases that matter.
@example("GET", f"/files/pypi/{SHA}/..%2f..%2fhistory.sqlite3")
@example("GET", f"/files/pypi/{SHA}/..%5c..%5chistory.sqlite3")
@example("GET", f"/files/pypi/{SHA}/x%2fy.whl")
def test_route_path_answers_every_request_sanely(verb: str, path: str) -> None:
    route = routes.route_path(verb, path)
    match route:
        case routes.Reject(status, message):
            assert 400 <= status < 500 and message
        case routes.Redirect(location):
            # On this proxy (no scheme, no //host, no \host), and no second redirect.
            assert location.startswith("/") and location[1:2] not in ("/", "\\")
            assert "\r" not in location and "\n" not in location
            again = routes.route_path(verb, location)
            assert not isinstance(again, routes.Redirect), (path, location, again)
        case routes.File(registry, key, filename, _):
            assert routes._KEY.match(key) and routes._REGISTRY.match(registry)
            assert filename and "/" not in filename and "\\" not in filename
            assert filename not in (".", "..") and "\x00" not in filename
        case routes.Project(_, _, project) | routes.JsonApi(_, _, project, _):
            assert project == canonicalize_name(project)
        case routes.Root() | routes.Help() | routes.Health() | routes.Metrics():
            pass
        case _:
            pytest.fail(f"unexpected route {route!r}")


dot_path = st.lists(
    st.one_of(st.sampled_from([".", "..", "%2e%2e", "%2E.", "packages", "ab", "x.whl"]), st.text(max_size=6)),
    max_size=6,
).map("/".join)


@given(st.one_of(st.text(), dot_path), st.sampled_from(["pypi.org", "files.pythonhosted.org"]))
@example("packages/../../etc/passwd", "files.pythonhosted.org")
@example("packages/%2e%2e/x.whl", "files.pythonhosted.org")
def test_route_forward_never_raises(path: str, host: str) -> None:
    route = routes.route_forward("GET", host, "/" + path, index_host=host == "pypi.org")
    if isinstance(route, routes.UpstreamFile):
        assert route.url.startswith(f"https://{host}/")
        segments = [unquote(s) for s in route.url.split("/", 3)[3].split("/")]
        assert "." not in segments and ".." not in segments, route.url


# -- pins -----------------------------------------------------------------------------------------

pin_text = st.one_of(
    st.text(max_size=40),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?",
        fullmatch=True,
    ),
)


@given(pin_text)
@example("0001-01-01T00:00:00+23:59")
@example("9999-12-31T23:59:59-23:59")
@example("2023-11-18T14:05:00.9999999999Z")
def test_parse_pin_accepts_only_past_utc_moments(text: str) -> None:
    try:
        pin = parse_pin(text, now=NOW)
    except PinError as e:
        assert str(e)
        return
    if pin.cutoff is None:
        assert text == "live"
        return
    assert pin.cutoff.tzinfo is not None and pin.cutoff.utcoffset() == timedelta(0)
    assert pin.cutoff <= NOW
    assert parse_pin(format_time(pin.cutoff), now=NOW).cutoff == pin.cutoff


# -- content negotiation --------------------------------------------------------------------------

accept = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.lists(
        st.builds(
            lambda media, q: media + q,
            st.sampled_from(["text/html", "application/vnd.pypi.simple.v1+json", "*/*", "application/*",
                             "application/vnd.pypi.simple.latest+html", "text/*", "x", "/", ""]),
            st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=nan", ";q=inf", ";q=-1", ";q=", ";level=1"]),
        ),
        max_size=5,
    ).map(", ".join),
)


@given(accept)
def test_choose_format_never_raises(header: str | None) -> None:
    assert choose_format(header) in ("html", "v1+html", "v1+json")


# -- ranges ---------------------------------------------------------------------------------------

range_header = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda unit, a, b: f"{unit}={a}-{b}",
        st.sampled_from(["bytes", "BYTES", "items", ""]),
        st.one_of(st.just(""), st.integers(0, 2**70).map(str)),
        st.one_of(st.just(""), st.integers(0, 2**70).map(str)),
    ),
)


@given(range_header, st.integers(0, 2**40))
def test_parse_range_selects_bytes_of_the_file_or_none(header: str, size: int) -> None:
    try:
        wanted = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if wanted is not None:
        assert isinstance(wanted, ByteRange)
        assert 0 <= wanted.start <= wanted.end < size
        assert wanted.length >= 1


# -- config ---------------------------------------------------------------------------------------

toml_scalar = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["10s", "0s", "-5s", "1e9s", "nan", "inf", "10x", "50GB", "-1GB", "1.5KiB",
                     "127.0.0.1:8080", "0.0.0.0:0", "[::1]:80", ":80", "host:99999", "a b:80",
                     "evil\x00host:80", "live", "2023-11-18", "2999-01-01",
                     "https://pypi.test/simple/", "ftp://x/", "http://[::1", "http://h:99999/",
                     "http://proxy.test:3128", "http://u:p@proxy.test:3128", "EGRESS_AUTH", "",
                     "private:alpha", "pypi:alpha", "private:../x", "nope:alpha", ":alpha"]),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
)
toml_value = st.recursive(
    toml_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
KNOWN_KEYS = {
    "server": ["listen", "data_dir", "default_pin", "live_ttl", "upstream_timeout", "page_deadline",
               "max_page_size", "refuse_other_hosts", "idle_timeout", "upstream_proxy",
               "upstream_proxy_auth_env"],
    "cache": ["size_limit"],
    "snapshot": ["interval", "track", "concurrency"],
    "pypi": ["simple_url", "json_url", "files_url"],
}
table = st.sampled_from(sorted(KNOWN_KEYS)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        st.dictionaries(st.sampled_from(KNOWN_KEYS[name]), toml_value, max_size=3),
    )
)
registry_entry = st.dictionaries(
    st.sampled_from(["name", "url", "json_url", "intercept", "auth", "auth_env", "access_ttl", "grace",
                     "upstream_proxy", "upstream_proxy_auth_env", "extra"]),
    st.one_of(toml_value, st.sampled_from(["private", "https://r.test/simple/", "static", "passthrough"])),
    max_size=6,
)
config_doc = st.builds(
    lambda tables, registries, junk: {**dict(tables), **registries, **junk},
    st.lists(table, max_size=4),
    st.one_of(st.just({}), st.builds(lambda r: {"registry": r}, st.one_of(st.lists(registry_entry, max_size=3), toml_value))),
    st.dictionaries(st.text(max_size=6), toml_value, max_size=1),
)


@settings(max_examples=400)
@given(config_doc)
@example({"server": {"upstream_timeout": -5}})
@example({"server": {"upstream_timeout": math.nan}})
@example({"server": {"live_ttl": math.inf}})
@example({"server": {"upstream_timeout": 0}})
@example({"cache": {"size_limit": -1}})
@example({"server": {"max_page_size": 0}})
@example({"snapshot": {"interval": "0s"}})
@example({"snapshot": {"track": ["../../admin"]}})
@example({"snapshot": {"track": ["private:alpha"]}, "registry": [{"name": "private", "url": "https://r.test/"}]})
@example({"snapshot": {"track": ["private:../x"]}, "registry": [{"name": "private", "url": "https://r.test/"}]})
@example({"snapshot": {"track": ["nope:alpha"]}})
@example({"registry": [{"name": "private", "url": "https://r.test/simple/", "grace": "10m"}]})
@example({"server": {"listen": "evil\x00host:80"}})
@example({"server": {"listen": "a b:80"}})
def test_config_parse_accepts_only_runnable_configs(doc: dict[str, Any]) -> None:
    try:
        config = parse(doc, source="proxy.toml")
    except ConfigError as e:
        assert str(e).startswith("proxy.toml: ")
        return
    assert isinstance(config, Config)
    assert math.isfinite(config.upstream_timeout) and config.upstream_timeout > 0, config
    assert math.isfinite(config.idle_timeout) and config.idle_timeout > 0, config
    for value in (config.live_ttl, config.snapshot_interval):  # snapshot_interval 0: never
        assert math.isfinite(value) and value >= 0, config
    assert config.size_limit >= 0 and config.max_page_size > 0
    assert config.snapshot_concurrency >= 1
    for text in config.track:  # `name` or `registry:name`; the name becomes a URL path
        registry_name, _, name = text.rpartition(":")
        assert routes._NAME.match(name), config.track
        registry = config.registry(registry_name or "pypi")
        assert registry is not None and registry.auth != "passthrough", config.track
    for registry in config.registries:
        if registry.auth != "passthrough":
            assert (registry.access_ttl, registry.grace) == (300.0, 0.0), registry
    assert config.listen_host and all(c not in config.listen_host for c in " \x00/")
    assert 0 <= config.listen_port <= 65535
    for registry in (config.pypi, *config.registries):  # an egress proxy is scheme://host:port
        if (egress := config.egress(registry)) is not None:
            parts = urlsplit(egress.url)
            assert parts.scheme in ("http", "https") and parts.port and "@" not in parts.netloc, egress
            assert egress.auth_env is None or egress.auth_env.isidentifier(), egress


CORP = {"name": "corp", "url": "https://corp.test/simple/"}


@pytest.mark.parametrize("interval", ["0", "0s", 0, 0.0])
def test_snapshot_interval_zero_is_accepted_as_off(interval: object) -> None:
    assert parse({"snapshot": {"interval": interval}}).snapshot_interval == 0


@pytest.mark.parametrize("interval", [-1, "-1s", math.nan, math.inf, "soon"])
def test_snapshot_interval_negative_or_not_finite_is_refused(interval: object) -> None:
    with pytest.raises(ConfigError, match=r"\[snapshot\] interval: .* is not a duration"):
        parse({"snapshot": {"interval": interval}})


@pytest.mark.parametrize("registry_first", [True, False])
def test_snapshot_track_takes_projects_of_declared_registries(registry_first: bool) -> None:
    snapshot = {"snapshot": {"track": ["corp:corp", "alpha", "pypi:Beta"]}}
    registry = {"registry": [CORP]}
    doc = {**registry, **snapshot} if registry_first else {**snapshot, **registry}
    config = parse(doc)
    assert config.track == ("corp:corp", "alpha", "pypi:Beta")
    [corp] = config.registries
    assert [parse_project(text, config) for text in config.track] == [
        (corp, "corp"), (config.pypi, "alpha"), (config.pypi, "beta"),
    ]


@pytest.mark.parametrize(
    ("track", "message"),
    [
        ("elsewhere:alpha",
         "[snapshot] track: 'elsewhere:alpha': no registry named 'elsewhere' (known: pypi, corp, private)"),
        (":alpha", "[snapshot] track: ':alpha': no registry named ''"),
        ("corp:../x", "[snapshot] track: 'corp:../x': '../x' is not a valid project name"),
        ("../../admin", "[snapshot] track: '../../admin': '../../admin' is not a valid project name"),
        ("corp:a:b", "[snapshot] track: 'corp:a:b': no registry named 'corp:a'"),
        ("private:alpha", "[snapshot] track: 'private:alpha': private uses auth = \"passthrough\""),
    ],
)
def test_snapshot_track_refuses_what_cannot_be_observed(track: str, message: str) -> None:
    private = {"name": "private", "url": "https://private.test/simple/", "auth": "passthrough"}
    with pytest.raises(ConfigError) as e:
        parse({"snapshot": {"track": ["alpha", track]}, "registry": [CORP, private]}, source="proxy.toml")
    assert str(e.value).startswith("proxy.toml: " + message), str(e.value)


@pytest.mark.parametrize("concurrency", [0, -1, "8", 1.5, True])
def test_snapshot_concurrency_must_be_a_positive_integer(concurrency: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse({"snapshot": {"concurrency": concurrency}}, source="proxy.toml")
    assert str(e.value) == (
        f"proxy.toml: [snapshot] concurrency: expected an integer >= 1, got {concurrency!r}"
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        # An empty data_dir would be the current directory, taken over (and made 0700) unasked.
        ({"server": {"data_dir": ""}}, "[server] data_dir: "),
        ({"server": {"data_dir": "  "}}, "[server] data_dir: "),
        ({"registry": [{**CORP, "json_url": "ftp://corp.test/pypi/"}]}, "[[registry]] corp json_url: "),
        ({"registry": [{**CORP, "url": "ftp://corp.test/simple/"}]}, "[[registry]] corp url: "),
    ],
)
def test_config_errors_name_the_key_that_is_wrong(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(doc, source="proxy.toml")
    assert str(e.value).startswith("proxy.toml: " + message), str(e.value)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
@example(b"\xff\xfe[server]\n")
@example(b'[server]\nlisten = "\xc3"\n')
def test_config_load_of_any_bytes_is_a_config_or_a_config_error(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "proxy.toml"
    path.write_bytes(body)
    try:
        load(path)
    except ConfigError as e:
        assert str(path) in str(e)


def test_config_load_of_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path)


def test_the_documented_example_config_is_the_defaults() -> None:
    example_file = Path(__file__).parent.parent / "proxy.toml"
    documented = load(example_file)
    defaults = Config()
    for name in Config.__dataclass_fields__:
        if name not in ("data_dir", "source"):
            assert getattr(documented, name) == getattr(defaults, name), name


def test_the_readme_documents_every_config_key_and_no_other() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    first_cells = [row.split(" | ")[0] for row in rows]
    documented = {key for cell in first_cells for key in re.findall(r"`(\w+\.\w+)`", cell)}
    accepted = {f"{table}.{key}" for table, keys in config_module._SCHEMA.items() for key in keys}
    assert documented == accepted
    [registry_row] = [row for row in rows if row.startswith("| `[[registry]]`")]
    described = registry_row.split(" | ")[2].split(";")[0]
    assert set(re.findall(r"`([a-z_]+)`", described)) == config_module._REGISTRY_KEYS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00[", "not valid TOML"),
        (b"[server\n", "not valid TOML"),
        (b"[server]\nlisten_port = 1\n", "unknown key 'listen_port'"),
        (b'[server]\nupstream_timeout = "-5s"\n', "upstream_timeout"),
        (b'[server]\nlisten = "no such host:80"\n', "listen"),
        (b'[server]\ndata_dir = "/tmp/x\\u0000y"\n', "data"),
        (b"[snapshot]\nconcurrency = 0\n", "[snapshot] concurrency: expected an integer >= 1, got 0\n"),
    ],
)
def test_serve_with_a_bad_config_exits_with_one_clear_line(tmp_path: Path, content: bytes, message: str) -> None:
    config = tmp_path / "proxy.toml"
    config.write_bytes(content)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}  # never the real data dir
    run = subprocess.run(
        [sys.executable, "-m", "datepin", "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    assert message in run.stderr, run.stderr
    assert run.stderr.startswith("Error: "), run.stderr


@pytest.mark.parametrize("command", [["ca"], ["serve", "--listen", "127.0.0.1:0"], ["cache", "stats"]])
def test_an_empty_data_dir_flag_is_refused_not_the_current_directory(tmp_path: Path, command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATEPIN_CONFIG"}
    run = subprocess.run([sys.executable, "-m", "datepin", *command, "--data-dir", ""],
                         capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
    assert run.returncode == 2 and "--data-dir" in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_data_dir_with_a_nul_byte_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError):
        prepare_data_dir(tmp_path / "bad\x00dir")

