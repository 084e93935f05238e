"""Static files inside the whole enddel app: what is served and what is rendered.

One real ``hypercorn -k trio enddel.app:app`` process with one render worker
serves a client folder with a hashed asset and its variants. Every path that
is not a static file must reach the bundle. No request may read the sibling
folder whose name shares the client folder's prefix.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import brotli
import pytest

from tests.conftest import ServerProcess, run_server
from tests.test_static import fetch

BUNDLE = r"""
globalThis.renderPage = (url) => {
  if (url.startsWith("/gone")) return { html: "<p>no such page</p>", status: 404 };
  return "<p>rendered " + url.length + "</p>";
};
"""
INDEX = (
    "<!doctype html><html><head><!--ssr-head--></head>"
    "<body><!--ssr-outlet--></body></html>"
)
SECRET = b"secret in the sibling folder"
ASSET = b"export const answer = 42;\n" * 400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("site")
    client = root / "client"
    (client / "assets").mkdir(parents=True)
    (client / "index.html").write_text(INDEX)
    (client / "assets" / "main-Ab3dEf9h.js").write_bytes(ASSET)
    (client / "assets" / "main-Ab3dEf9h.js.br").write_bytes(brotli.compress(ASSET))
    (client / "assets" / "main-Ab3dEf9h.js.gz").write_bytes(gzip.compress(ASSET))
    (root / "client-secret").mkdir()
    (root / "client-secret" / "key.txt").write_bytes(SECRET)
    (client / "key.txt").symlink_to(root / "client-secret" / "key.txt")
    (root / "bundle.js").write_text(BUNDLE)
    settings = {
        "ENDDEL_BUNDLE": str(root / "bundle.js"),
        "ENDDEL_CLIENT_DIR": str(client),
        "ENDDEL_RENDER_WORKERS": "1",
        "ENDDEL_CACHE_BYTES": "0",
    }
    with run_server(settings) as running:
        yield running


@pytest.mark.parametrize("coding", ["identity", "br", "gzip"])
async def test_asset_served(server: ServerProcess, coding: str) -> None:
    response = await fetch(
        server, "/assets/main-Ab3dEf9h.js", {"Accept-Encoding": coding}
    )
    decoded = {
        "identity": lambda body: body,
        "br": brotli.decompress,
        "gzip": gzip.decompress,
    }[coding](response.body)
    assert response.status == 200
    assert decoded == ASSET
    assert response.header("Cache-Control") == "public, max-age=31536000, immutable"
    assert response.header("Vary") == "Accept-Encoding"
    assert response.header("Content-Encoding") == (
        None if coding == "identity" else coding
    )


@pytest.mark.parametrize(
    "target",
    [
        b"/",
        b"/index.html",
        b"/products/42",
        b"/assets/missing-Ab3dEf9h.js",
        b"/assets/",
        b"/key.txt",
        b"/../client-secret/key.txt",
        b"/%2e%2e%2fclient-secret%2fkey.txt",
        b"/assets/%2e%2e/%2e%2e/client-secret/key.txt",
    ],
)
async def test_rendered_not_static(server: ServerProcess, target: bytes) -> None:
    response = await fetch(server, target)
    assert response.status == 200
    assert b"<p>rendered " in response.body
    assert b"<!--ssr-outlet-->" not in response.body
    assert SECRET not in response.body


async def test_missing_page_is_app_404(server: ServerProcess) -> None:
    response = await fetch(server, "/gone.js")
    assert response.status == 404
    assert b"no such page" in response.body


async def test_head_of_asset(server: ServerProcess) -> None:
    response = await fetch(server, "/assets/main-Ab3dEf9h.js", method="HEAD")
    assert response.status == 200
    assert response.body == b""
    assert response.header("Content-Length") == str(len(ASSET))
