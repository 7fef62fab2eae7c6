"""The example app as deployed: real processes, a real nginx in front, clients on
distinct loopback addresses, and the IP address each one leaves in the audit log.

- ``python -m example_app --trusted-proxy 127.0.0.1/32`` (uvicorn's own proxy headers
  off) behind nginx: 127.0.0.2 connecting directly with a spoofed ``X-Forwarded-For`` is
  logged as 127.0.0.2; 127.0.0.3 (and ::1) through nginx, spoofing too, as itself. No
  warning.
- The failures this setup avoids, with the same app under plain ``uvicorn`` (proxy
  headers on by default): behind nginx the server rewrites the client before auditmw
  walks the header again, and auditmw warns; with ``FORWARDED_ALLOW_IPS="*"`` a client
  chooses its logged IP through both layers; with no trusted proxy anywhere a local
  client still chooses it.

nginx is Debian's package, started by the tests with a configuration in tmp_path
(``scripts/test`` installs it). Without it the nginx tests are skipped, unless
``AUDITMW_REQUIRE_NGINX`` is set. Clients bind 127.0.0.2 and 127.0.0.3, which Linux
routes through the loopback interface.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ._example import ADMIN
from ._paths import ROOT
from ._servers import ServerProcess, free_port, running, running_example_app, server_env

SPOOFED = "6.6.6.6"
DIRECT_CLIENT = "127.0.0.2"  # connects to the app itself
PROXIED_CLIENT = "127.0.0.3"  # connects to nginx
NGINX_ADDRESS = "127.0.0.1"  # nginx connects to the app from here (proxy_bind)
TWICE = "the proxy rule runs twice"  # the warning's words


def find_nginx() -> str | None:
    # Debian puts nginx in /usr/sbin, which is not on a normal user's PATH.
    candidates = [shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    found = find_nginx()
    if found is None:
        message = "nginx is not installed (scripts/test installs Debian's nginx)"
        if os.environ.get("AUDITMW_REQUIRE_NGINX"):
            pytest.fail(message + "; AUDITMW_REQUIRE_NGINX is set")
        pytest.skip(message + "; set AUDITMW_REQUIRE_NGINX=1 to fail instead")
    return found


# --- processes ----------------------------------------------------------------------------


def plain_uvicorn(directory: Path, **env: str) -> AbstractContextManager[ServerProcess]:
    """The same app served by the ``uvicorn`` command with its defaults: proxy headers on,
    trusting ``$FORWARDED_ALLOW_IPS`` or else 127.0.0.1 and ::1."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "example_app.app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = server_env(EXAMPLE_APP_DATA_DIR=str(directory / "data"), **env)
    return running(command, f"http://127.0.0.1:{port}", directory / "app.log", env)


def nginx_config(directory: Path, binary: str, port: int, upstream: str) -> str:
    """A self-contained configuration: every path nginx writes is in ``directory``."""
    temp_paths = ["client_body", "proxy"]
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, check=True).stderr
    temp_paths += [
        m for m in ("fastcgi", "uwsgi", "scgi") if f"without-http_{m}_module" not in built
    ]
    temp = "\n".join(f"    {name}_temp_path {directory}/{name};" for name in temp_paths)
    listen = f"        listen 127.0.0.1:{port};"
    if has_ipv6_loopback():
        listen += f"\n        listen [::1]:{port};"
    return f"""
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {directory}/access.log;
{temp}
    server {{
{listen}
        location / {{
            proxy_pass {upstream};
            proxy_bind {NGINX_ADDRESS};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def nginx(
    directory: Path, binary: str, upstream: ServerProcess
) -> AbstractContextManager[ServerProcess]:
    directory.mkdir()
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, binary, port, upstream.url))
    command = [binary, "-p", str(directory), "-c", str(config)]
    # Ready when a request goes through to the app.
    return running(command, f"http://127.0.0.1:{port}", directory / "nginx.log", server_env())


# --- requests -----------------------------------------------------------------------------


def client(
    url: str, source: str | None = None, auth: tuple[str, str] | None = None
) -> httpx.Client:
    """An HTTP client whose connections come from the loopback address ``source``."""
    transport = httpx.HTTPTransport(local_address=source) if source else None
    return httpx.Client(base_url=url, transport=transport, auth=auth, timeout=30)


def failed_sign_in(
    url: str, request_id: str, *, source: str | None = None, forwarded_for: str | None = None
) -> None:
    """A wrong password: 401, and a ``user.sign_in_failed`` event with ``request_id``."""
    headers = {"x-request-id": request_id}
    if forwarded_for is not None:
        headers["x-forwarded-for"] = forwarded_for
    with client(url, source) as http:
        response = http.post(
            "/auth/sign-in", json={"email": "nobody@example.com", "password": "x"}, headers=headers
        )
    assert response.status_code == 401, response.text


def logged_ips(app: ServerProcess) -> dict[str, str | None]:
    """Request id -> logged IP of every event, read back through the admin API."""
    with client(app.url, auth=ADMIN) as http:
        response = http.get("/admin/audit/events", params={"limit": 100})
    assert response.status_code == 200, response.text
    return {event["request_id"]: event["ip_address"] for event in response.json()["events"]}


# --- the recommended setup: nginx -> uvicorn --no-proxy-headers -> auditmw ----------------


@dataclass(frozen=True)
class Deployment:
    app: ServerProcess
    nginx: ServerProcess


@pytest.fixture(scope="module", params=["starlette", "litestar"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, nginx_binary: str
) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp(f"deploy-{request.param}")
    with ExitStack() as stack:
        options = ("--framework", request.param, "--trusted-proxy", f"{NGINX_ADDRESS}/32")
        app = stack.enter_context(running_example_app(directory, *options))
        proxy = stack.enter_context(nginx(directory / "nginx", nginx_binary, app))
        yield Deployment(app, proxy)


def assert_no_warning(server: ServerProcess) -> None:
    assert TWICE not in server.output(), server.output()


def test_the_app_trusts_only_nginx(deployment: Deployment) -> None:
    assert f"trusted proxies: {NGINX_ADDRESS}/32" in deployment.app.output()


def test_a_direct_client_cannot_choose_its_logged_ip(deployment: Deployment) -> None:
    failed_sign_in(deployment.app.url, "direct", source=DIRECT_CLIENT, forwarded_for=SPOOFED)
    assert logged_ips(deployment.app)["direct"] == DIRECT_CLIENT
    assert_no_warning(deployment.app)


def test_a_client_through_nginx_is_logged_by_its_own_address(deployment: Deployment) -> None:
    url = deployment.nginx.url
    failed_sign_in(url, "proxied", source=PROXIED_CLIENT)
    # nginx appends the address it saw to what the client sent: "6.6.6.6, 127.0.0.3".
    failed_sign_in(url, "proxied-spoof", source=PROXIED_CLIENT, forwarded_for=SPOOFED)
    ips = logged_ips(deployment.app)
    assert (ips["proxied"], ips["proxied-spoof"]) == (PROXIED_CLIENT, PROXIED_CLIENT)
    assert_no_warning(deployment.app)


def test_an_ipv6_client_through_nginx(deployment: Deployment) -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback address (::1) on this machine")
    port = deployment.nginx.url.rsplit(":", 1)[1]
    failed_sign_in(f"http://[::1]:{port}", "ipv6", forwarded_for=SPOOFED)
    assert logged_ips(deployment.app)["ipv6"] == "::1"


def test_an_admin_export_through_nginx_logs_the_admin_address(deployment: Deployment) -> None:
    # The admin app records exports itself; it takes the IP auditmw resolved too.
    with client(deployment.nginx.url, PROXIED_CLIENT, auth=ADMIN) as http:
        response = http.get(
            "/admin/audit/export.jsonl",
            headers={"x-request-id": "export", "x-forwarded-for": SPOOFED},
        )
    assert response.status_code == 200, response.text
    assert logged_ips(deployment.app)["export"] == PROXIED_CLIENT


# --- the failures: the server applies the rule too -----------------------------------------


def test_uvicorn_default_proxy_headers_behind_nginx_are_reported_once(
    tmp_path: Path, nginx_binary: str
) -> None:
    # uvicorn trusts 127.0.0.1 by default, so it rewrites scope["client"] from nginx's
    # header before auditmw walks the header again: auditmw notices and says so.
    with plain_uvicorn(tmp_path, AUDITMW_TRUSTED_PROXIES=f"{NGINX_ADDRESS}/32") as app:
        failed_sign_in(app.url, "direct")  # no proxy involved: nothing to report
        assert TWICE not in app.output()
        with nginx(tmp_path / "nginx", nginx_binary, app) as proxy:
            # nginx was ready when a first request went through it: reported then.
            assert app.output().count(TWICE) == 1, app.output()
            failed_sign_in(proxy.url, "first", source=PROXIED_CLIENT, forwarded_for=SPOOFED)
            failed_sign_in(proxy.url, "second", source=PROXIED_CLIENT)
        ips = logged_ips(app)
        output = app.output()
    # Here both layers agree (they trust the same address); the warning says they are two.
    assert (ips["first"], ips["second"]) == (PROXIED_CLIENT, PROXIED_CLIENT)
    assert output.count(TWICE) == 1, output
    assert "--no-proxy-headers" in output


def test_uvicorn_trusting_everyone_lets_clients_choose_the_logged_ip(
    tmp_path: Path, nginx_binary: str
) -> None:
    # FORWARDED_ALLOW_IPS="*" (as many deployment guides suggest): uvicorn takes the
    # leftmost X-Forwarded-For entry, which the client wrote. auditmw's trusted_proxies,
    # though right, come second: the spoofed address is logged, and auditmw warns.
    with (
        plain_uvicorn(
            tmp_path, FORWARDED_ALLOW_IPS="*", AUDITMW_TRUSTED_PROXIES=f"{NGINX_ADDRESS}/32"
        ) as app,
        nginx(tmp_path / "nginx", nginx_binary, app) as proxy,
    ):
        failed_sign_in(app.url, "direct", source=DIRECT_CLIENT, forwarded_for=SPOOFED)
        failed_sign_in(proxy.url, "proxied", source=PROXIED_CLIENT, forwarded_for="7.7.7.7")
        ips = logged_ips(app)
        output = app.output()
    assert (ips["direct"], ips["proxied"]) == (SPOOFED, "7.7.7.7")
    assert output.count(TWICE) == 1, output


@pytest.mark.parametrize(
    ("served_by", "logged"),
    [("plain_uvicorn", SPOOFED), ("example_app", "127.0.0.1")],
)
def test_with_no_proxy_a_local_client_chooses_its_ip_only_under_uvicorn_defaults(
    tmp_path: Path, served_by: str, logged: str
) -> None:
    # The report: no trusted proxy configured in auditmw, yet uvicorn (trusting
    # 127.0.0.1 by default) took a local client's X-Forwarded-For. With its proxy headers
    # off (python -m example_app), the peer is logged.
    serve = plain_uvicorn if served_by == "plain_uvicorn" else running_example_app
    with serve(tmp_path) as app:
        failed_sign_in(app.url, "local", forwarded_for=SPOOFED)
        assert logged_ips(app)["local"] == logged
        # One layer applied the rule (the server): no warning (an INFO line, not shown).
        assert_no_warning(app)


# --- the example app's command line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (
            ["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "10.0.0.0/33"],
            {},
            "argument --trusted-proxy: '10.0.0.0/33' is not an IP address or CIDR network",
        ),
        (
            [],
            {"AUDITMW_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"},
            "AUDITMW_TRUSTED_PROXIES: 'proxy.internal' is not an IP address or CIDR network",
        ),
    ],
)
def test_a_bad_trusted_proxy_is_a_usage_error(
    arguments: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "example_app", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=server_env(**env),
        timeout=120,
    )
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "usage: python -m example_app" in result.stderr
    assert "Traceback" not in result.stderr
