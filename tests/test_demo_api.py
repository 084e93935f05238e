"""The demo API upstream on its own, and the demo's product page rendered from it.

Every test runs ``python -m enddel.demo_api`` as a real process on an ephemeral
loopback port. The end-to-end tests give it a product file whose names differ
from the ones bundled with the demo, so a page that shows them was rendered from
the upstream's response and not from the bundle.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from enddel.demo_api import DEFAULT_PRODUCTS, ProductFileError, load_products, main
from tests.conftest import REPO, STOP_TIMEOUT, ServerProcess, run_server, wait_for
from tests.demo_upstream import run_demo_api

PRODUCTS = json.loads(DEFAULT_PRODUCTS.read_text())
BRASS_PEN = next(p for p in PRODUCTS if p["slug"] == "brass-pen")
#: In the bundled catalog but left out of the test upstream's product file.
WITHHELD = PRODUCTS[0]
UPSTREAM_SUFFIX = " (test upstream)"
RESOURCES = re.compile(
    r'<script type="application/json" id="shop-resources">(.*?)</script>'
)


def get(base: str, path: str) -> httpx.Response:
    return httpx.get(base + path, timeout=30)


# -- the upstream alone ------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with run_demo_api() as url:
        yield url


def test_every_product_is_served(api: str) -> None:
    for product in PRODUCTS:
        response = get(api, f"/products/{product['slug']}")
        assert response.status_code == 200, product["slug"]
        assert response.headers["content-type"] == "application/json"
        assert response.json() == product


def test_unknown_slug_is_404_json(api: str) -> None:
    response = get(api, "/products/no-such-product")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "no product with slug 'no-such-product'"}


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/products",
        "/products/",
        "/products/brass-pen/x",
        "/api/products/brass-pen",
    ],
)
def test_other_path_is_404_json(api: str, path: str) -> None:
    response = get(api, path)
    assert response.status_code == 404
    assert "error" in response.json()


def test_post_is_405_with_allow(api: str) -> None:
    response = httpx.post(api + "/products/brass-pen", content=b"{}", timeout=30)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert "POST" in response.json()["error"]


def test_head_has_length_and_no_body(api: str) -> None:
    response = httpx.head(api + "/products/brass-pen", timeout=30)
    assert response.status_code == 200
    assert response.content == b""
    expected = len(json.dumps(BRASS_PEN, ensure_ascii=False).encode())
    assert int(response.headers["content-length"]) == expected


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_exits_cleanly(stop_signal: int) -> None:
    command = [sys.executable, "-m", "enddel.demo_api"]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert get(url, "/products/brass-pen").status_code == 200
        process.send_signal(stop_signal)
        _, errors = process.communicate(timeout=STOP_TIMEOUT)
    assert process.returncode == 0
    assert "Traceback" not in errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", "is not valid JSON"),
        ('{"slug": "a"}', "must contain a JSON list of products"),
        ('[{"name": "No Slug"}]', "product 0 has no string slug"),
        ('[{"slug": "a"}, {"slug": "a"}]', "slug 'a' appears twice"),
    ],
)
def test_bad_product_file_is_rejected(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "products.json"
    path.write_text(content)
    with pytest.raises(ProductFileError, match=re.escape(message)):
        load_products(path)


def test_missing_product_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    assert main(["--products", str(missing)]) == 2
    assert f"cannot read the product file {missing}" in capsys.readouterr().err


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "192.0.2.1:8000", "example.com:80"])
def test_non_loopback_bind_is_rejected(
    bind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--bind", bind])
    assert exit_info.value.code == 2
    assert "is not a loopback address" in capsys.readouterr().err


# -- enddel rendering from the upstream -------------------------------------------


@pytest.fixture(scope="module")
def upstream_products(
    tmp_path_factory: pytest.TempPathFactory,
) -> list[dict[str, object]]:
    """The test upstream's products: every bundled one but WITHHELD, renamed."""
    return [
        {**product, "name": product["name"] + UPSTREAM_SUFFIX}
        for product in PRODUCTS
        if product["slug"] != WITHHELD["slug"]
    ]


@pytest.fixture(scope="module")
def shop(
    demo_build: Path,
    upstream_products: list[dict[str, object]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("upstream") / "products.json"
    path.write_text(json.dumps(upstream_products))
    with (
        run_demo_api(path) as upstream,
        run_server(
            {"ENDDEL_RENDER_WORKERS": "1", "ENDDEL_API_UPSTREAM": upstream}
        ) as server,
    ):
        yield server


def test_product_page_shows_upstream_product(shop: ServerProcess) -> None:
    response = get(shop.url, "/products/brass-pen")
    assert response.status_code == 200
    assert "<h1>Brass Pen (test upstream)</h1>" in response.text
    assert "<title>Brass Pen (test upstream) · Enddel Shop</title>" in response.text


def test_page_embeds_upstream_response(
    shop: ServerProcess, upstream_products: list[dict[str, object]]
) -> None:
    match = RESOURCES.search(get(shop.url, "/products/brass-pen").text)
    assert match
    expected = next(p for p in upstream_products if p["slug"] == "brass-pen")
    assert json.loads(match.group(1)) == {
        "/api/products/brass-pen": {"status": 200, "body": expected}
    }


def test_product_withheld_upstream_is_404(shop: ServerProcess) -> None:
    response = get(shop.url, f"/products/{WITHHELD['slug']}")
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text
    assert WITHHELD["name"] not in response.text
    match = RESOURCES.search(response.text)
    assert match
    entry = json.loads(match.group(1))[f"/api/products/{WITHHELD['slug']}"]
    assert entry["status"] == 404


def test_unknown_product_is_404(shop: ServerProcess) -> None:
    response = get(shop.url, "/products/no-such-product")
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text


def test_proxy_serves_upstream_product(shop: ServerProcess) -> None:
    response = get(shop.url, "/api/products/brass-pen")
    assert response.status_code == 200
    assert response.json()["name"] == "Brass Pen (test upstream)"


def test_list_page_stays_bundled(shop: ServerProcess) -> None:
    body = get(shop.url, "/products").text
    assert WITHHELD["name"] in body
    assert UPSTREAM_SUFFIX not in body


# -- upstream down ---------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_shop(demo_build: Path) -> Iterator[ServerProcess]:
    """A server whose upstream is the closed loopback port run_server sets."""
    with run_server({"ENDDEL_RENDER_WORKERS": "1"}) as server:
        yield server


def test_upstream_down_is_503_page(offline_shop: ServerProcess) -> None:
    response = get(offline_shop.url, "/products/brass-pen")
    assert response.status_code == 503
    assert "<h1>Product unavailable</h1>" in response.text
    assert "<title>Product unavailable · Enddel Shop</title>" in response.text


def test_upstream_down_page_is_not_cached(offline_shop: ServerProcess) -> None:
    for _ in range(2):
        response = get(offline_shop.url, "/products/cast-iron-skillet")
        assert response.status_code == 503
        assert response.headers["x-cache"] == "MISS"


def test_upstream_down_is_logged(offline_shop: ServerProcess) -> None:
    get(offline_shop.url, "/products/oak-cutting-board")
    line = "GET /api/products/oak-cutting-board failed"
    # The server's output reaches the log through a pipe, after the response.
    wait_for(lambda: line in offline_shop.log)


def test_other_pages_render_with_upstream_down(offline_shop: ServerProcess) -> None:
    assert get(offline_shop.url, "/products?page=2").status_code == 200
