"""The demo shop end to end: a real hypercorn process, real render workers, real V8.

The product pages fetch their product from the demo API upstream, which runs as
a process of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, ServerProcess, run_server
from tests.demo_upstream import run_demo_api

PRODUCTS = json.loads((REPO / "demo" / "src" / "data" / "products.json").read_text())
EMPTY_OUTLET = '<div id="app"></div>'


@pytest.fixture(scope="module")
def server(demo_build: Path) -> Iterator[ServerProcess]:
    with run_demo_api() as upstream:
        settings = {"ENDDEL_RENDER_WORKERS": "2", "ENDDEL_API_UPSTREAM": upstream}
        with run_server(settings) as running:
            yield running


def get(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30)


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/", 200, PRODUCTS[0]["name"]),
        ("/products", 200, PRODUCTS[0]["name"]),
        ("/products?page=2", 200, "page=1"),
        (f"/products/{PRODUCTS[1]['slug']}", 200, PRODUCTS[1]["description"]),
        ("/about", 200, "About"),
        ("/no/such/page", 404, "not found"),
    ],
)
def test_route_is_server_rendered(
    server: ServerProcess, path: str, status: int, expected: str
) -> None:
    response = get(server, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    body = response.text
    assert body.startswith("<!doctype html>")
    assert EMPTY_OUTLET not in body
    assert "<!--ssr-outlet-->" not in body
    assert "<!--ssr-head-->" not in body
    assert expected.lower() in body.lower()
    assert re.search(r"<title>[^<]+</title>", body)


def test_paged_list_differs_per_page(server: ServerProcess) -> None:
    first = get(server, "/products").text
    second = get(server, "/products?page=2").text
    names_first = {p["name"] for p in PRODUCTS if p["name"] in first}
    names_second = {p["name"] for p in PRODUCTS if p["name"] in second}
    assert names_first
    assert names_second
    assert not names_first & names_second


def test_every_product_page_renders(server: ServerProcess) -> None:
    for product in PRODUCTS[:10]:
        response = get(server, f"/products/{product['slug']}")
        assert response.status_code == 200, product["slug"]
        assert product["name"] in response.text


def test_unknown_product_is_404(server: ServerProcess) -> None:
    response = get(server, "/products/no-such-product")
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text


def test_product_page_embeds_api_response(server: ServerProcess) -> None:
    product = PRODUCTS[1]
    body = get(server, f"/products/{product['slug']}").text
    match = re.search(
        r'<script type="application/json" id="shop-resources">(.*?)</script>', body
    )
    assert match, "the product page carries no API data for hydration"
    head_end = body.index("</head>")
    assert match.start() < head_end
    resources = json.loads(match.group(1))
    assert resources == {
        f"/api/products/{product['slug']}": {"status": 200, "body": product}
    }


def test_list_page_embeds_no_api_data(server: ServerProcess) -> None:
    assert 'id="shop-resources"' not in get(server, "/products").text


def test_hashed_assets_are_served(server: ServerProcess) -> None:
    page = get(server, "/").text
    scripts = re.findall(r'src="(/assets/[^"]+\.js)"', page)
    assert scripts
    response = get(server, scripts[0])
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]


def test_head_has_no_body(server: ServerProcess) -> None:
    response = httpx.head(server.url + "/about", timeout=30)
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


def test_sigint_leaves_no_render_worker(demo_build: Path) -> None:
    with run_server({"ENDDEL_RENDER_WORKERS": "2"}) as running:
        assert get(running, "/").status_code == 200
        workers = _render_workers_of(running.process.pid)
        assert len(workers) == 2
        assert running.stop(signal.SIGINT) == 0
    for pid in workers:
        assert not _alive(pid), f"render worker {pid} outlived the server"
    assert "Traceback" not in running.log


def _render_workers_of(master: int) -> list[int]:
    """PIDs of render worker processes in the server's process group."""
    output = subprocess.run(
        ["ps", "-o", "pid=,pgid=,args=", "-e"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pids = []
    for line in output.splitlines():
        pid, pgid, args = line.split(None, 2)
        if int(pgid) == master and "-m workers" in args:
            pids.append(int(pid))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
