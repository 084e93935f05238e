"""The SSR path of a real server, with small bundles written by the tests."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, ServerProcess, _server_environ, run_server

BUNDLE = r"""
globalThis.renderPage = (url) => {
  const path = url.split("?")[0];
  if (path === "/throw") throw new Error("secret detail " + url);
  if (path === "/document") {
    return "<!DOCTYPE html><html><body>whole " + url + "</body></html>";
  }
  if (path === "/object") {
    return {
      html: "<main>obj</main>", status: 201, head: "<title>Object page</title>",
      headers: { "X-Page": "object", "Cache-Control": "max-age=5" },
    };
  }
  if (path === "/slow") {
    return new Promise((resolve) => {
      const end = Date.now() + 300;
      while (Date.now() < end) {}
      resolve("<p>slow</p>");
    });
  }
  if (path === "/never") return new Promise(() => {});
  if (path === "/big") return "<p>" + "big ".repeat(5000) + "</p>";
  return "<p>page " + url + "</p>";
};
"""
INDEX = (
    "<!doctype html><html><head><meta charset=utf-8><!--ssr-head--></head>"
    '<body><div id="root"><!--ssr-outlet--></div></body></html>'
)


def write_site(
    folder: Path, bundle: str = BUNDLE, index: str = INDEX
) -> dict[str, str]:
    (folder / "client").mkdir(parents=True, exist_ok=True)
    (folder / "client" / "index.html").write_text(index)
    (folder / "bundle.js").write_text(bundle)
    return {
        "ENDDEL_BUNDLE": str(folder / "bundle.js"),
        "ENDDEL_CLIENT_DIR": str(folder / "client"),
        "ENDDEL_RENDER_WORKERS": "1",
        "ENDDEL_CACHE_BYTES": "0",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    settings = write_site(tmp_path_factory.mktemp("site"))
    settings["ENDDEL_RENDER_TIMEOUT"] = "1"
    with run_server(settings) as running:
        yield running


def get(server: ServerProcess, path: str, **headers: str) -> httpx.Response:
    return httpx.get(server.url + path, headers=headers, timeout=30)


def test_fragment_goes_into_outlet(server: ServerProcess) -> None:
    response = get(server, "/hello?x=%2F1")
    assert response.status_code == 200
    assert '<div id="root"><p>page /hello?x=%2F1</p></div>' in response.text
    assert response.text.startswith("<!doctype html>")


def test_document_is_served_as_is(server: ServerProcess) -> None:
    response = get(server, "/document")
    assert response.text == "<!DOCTYPE html><html><body>whole /document</body></html>"


def test_object_result(server: ServerProcess) -> None:
    response = get(server, "/object")
    assert response.status_code == 201
    assert (
        "<head><meta charset=utf-8><title>Object page</title></head>" in response.text
    )
    assert '<div id="root"><main>obj</main></div>' in response.text
    assert response.headers["x-page"] == "object"
    assert response.headers["cache-control"] == "max-age=5"


def test_throwing_render_is_500_without_stack(server: ServerProcess) -> None:
    response = get(server, "/throw?k=v")
    assert response.status_code == 500
    assert "secret detail" not in response.text
    assert "at globalThis" not in response.text
    assert '<div id="root"></div>' in response.text
    server.wait_log("secret detail /throw?k=v")
    server.wait_log("url=/throw?k=v")


def test_render_past_deadline_is_504(server: ServerProcess) -> None:
    response = get(server, "/never")
    assert response.status_code == 504
    assert '<div id="root"></div>' in response.text
    assert get(server, "/after-timeout").status_code == 200


def test_compressed_variants(server: ServerProcess) -> None:
    plain = get(server, "/big", **{"Accept-Encoding": "identity"})
    brotli = httpx.get(
        server.url + "/big", headers={"Accept-Encoding": "br"}, timeout=30
    )
    gzip = get(server, "/big", **{"Accept-Encoding": "gzip"})
    assert plain.headers.get("content-encoding") is None
    assert brotli.headers["content-encoding"] == "br"
    assert gzip.headers["content-encoding"] == "gzip"
    for response in (plain, brotli, gzip):
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.text == plain.text
    etags = {r.headers["etag"] for r in (plain, brotli, gzip)}
    assert len(etags) == 3
    assert plain.headers["etag"].endswith('-identity"')
    assert brotli.headers["etag"] == plain.headers["etag"].replace("-identity", "-br")
    assert gzip.headers["etag"] == plain.headers["etag"].replace("-identity", "-gzip")


def test_method_not_allowed(server: ServerProcess) -> None:
    response = httpx.post(server.url + "/about", timeout=30)
    assert response.status_code == 405


def test_full_queue_answers_503(tmp_path: Path) -> None:
    settings = write_site(tmp_path)
    settings["ENDDEL_RENDER_QUEUE"] = "1"
    with run_server(settings) as running:
        with httpx.Client(timeout=30) as client:
            with concurrent.futures.ThreadPoolExecutor(8) as executor:
                futures = [
                    executor.submit(client.get, f"{running.url}/slow?n={n}")
                    for n in range(8)
                ]
                statuses = [f.result().status_code for f in futures]
                retry_after = [
                    f.result().headers.get("retry-after")
                    for f in futures
                    if f.result().status_code == 503
                ]
    assert 200 in statuses
    assert 503 in statuses
    assert all(value == "1" for value in retry_after)
    running.wait_log("render queue is full")


def start_failure(settings: dict[str, str]) -> str:
    """Start a server that must exit at start-up; return what it printed.

    The server process exits with status 2, but hypercorn 0.18's master
    reports 0 whatever its workers' status (its second ``_join_exited`` runs on
    an empty list), so only the output and the exit itself are checked.
    """
    command = [sys.executable, "-m", "hypercorn", "-k", "trio", "--bind",
               "127.0.0.1:0", "enddel.app:app"]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, env=_server_environ(settings), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "enddel cannot start: " in output
    assert "Traceback" not in output
    assert "Running on" not in output
    return output


def test_missing_bundle_names_build_command(tmp_path: Path) -> None:
    settings = write_site(tmp_path)
    settings["ENDDEL_BUNDLE"] = str(tmp_path / "missing.js")
    output = start_failure(settings)
    assert f"ENDDEL_BUNDLE='{tmp_path / 'missing.js'}': no such file" in output


def test_missing_demo_build_names_build_command(tmp_path: Path) -> None:
    settings = write_site(tmp_path)
    # A path inside the demo folder stands for the demo's unbuilt default.
    settings["ENDDEL_BUNDLE"] = str(REPO / "demo" / "missing-build" / "bundle.js")
    output = start_failure(settings)
    assert "npm run build --prefix demo" in output


def test_bundle_that_fails_to_load_stops_startup(tmp_path: Path) -> None:
    settings = write_site(tmp_path, bundle="globalThis.renderPage = ;")
    output = start_failure(settings)
    assert "enddel cannot start" in output
    assert "SyntaxError" in output


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ENDDEL_RENDER_WORKERS", "many", "expected a whole number from 1 to 64"),
        ("ENDDEL_RENDER_TIMEOUT", "-1", "greater than 0"),
        ("ENDDEL_API_UPSTREAM", "ftp://x", "http:// or https://"),
    ],
)
def test_invalid_setting_stops_startup(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    settings = write_site(tmp_path)
    settings[name] = value
    output = start_failure(settings)
    assert f"{name}={value!r} is invalid" in output
    assert message in output
