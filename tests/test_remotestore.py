"""The HTTP remote cache behind a proxy, as corporate CI has it: `HTTP(S)_PROXY` is used and `NO_PROXY`
honoured. The proxy is a real nginx forwarding to the real nginx cache, both on 127.0.0.1."""

from __future__ import annotations

import shutil
import signal

import pytest

from test_remote_cache import Nginx, free_port, nginx_conf, remote_warnings, start_nginx, workspace

FILES = {"g/BUILD.toml": '[genrule.g]\nouts = ["o.txt"]\ncmd = "echo proxied > $OUT"\n'}


class ForwardProxy:
    """nginx taking absolute-URI requests (what a client sends to a proxy) and passing them on."""

    def __init__(self, base, upstream_port: int):
        base.mkdir(parents=True)
        self.port = free_port()
        self.log = base / "access.log"
        (base / "nginx.conf").write_text(nginx_conf(base, f"""
            server {{
                listen 127.0.0.1:{self.port};
                client_max_body_size 0;
                location / {{ proxy_pass http://127.0.0.1:{upstream_port}; }}
            }}
        """))
        self.proc = start_nginx(base, self.port, "nginx proxy")

    def requests(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=30)


@pytest.fixture
def servers(tmp_path):
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (tools/test.sh installs it)")
    cache = Nginx(tmp_path / "cache-server")
    proxy = ForwardProxy(tmp_path / "proxy", cache.port)
    yield cache, proxy
    proxy.stop()
    cache.stop()


def proxy_env(proxy_url: str, no_proxy: str = "") -> dict:
    return {"HTTP_PROXY": proxy_url, "http_proxy": proxy_url, "NO_PROXY": no_proxy, "no_proxy": no_proxy}


def test_the_http_remote_goes_through_the_proxy_unless_no_proxy_names_the_host(tmp_path, servers):
    cache, proxy = servers
    first = workspace(tmp_path, "first", files=FILES)
    r = first.build(check=True, env={**cache.env, **proxy_env(f"http://127.0.0.1:{proxy.port}")})
    assert not remote_warnings(r) and cache.files("ac")
    through = proxy.requests()
    assert through > 0, "the remote cache did not use HTTP_PROXY"

    second = workspace(tmp_path, "second", files=FILES)
    r = second.build(check=True, env={**cache.env, **proxy_env(f"http://127.0.0.1:{proxy.port}", "127.0.0.1")})
    assert r.statuses("remote") == ["//g:g%Genrule"] and proxy.requests() == through

    # A proxy that does not answer is a remote failure (a warning), not a build failure.
    third = workspace(tmp_path, "third", files=FILES)
    r = third.build(check=True, env={**cache.env, **proxy_env(f"http://127.0.0.1:{free_port()}")})
    assert remote_warnings(r) and r.statuses("executed") == ["//g:g%Genrule"]
    assert third.out("g/g/o.txt").read_text() == "proxied\n"
