"""Bundles built by esbuild and Vite render the same HTML in Node and in enddel.

The corpus in ``tests/corpus`` is built once per content hash of its lock file
and sources, into a cache folder (``ENDDEL_CORPUS_CACHE``, default under the
system temp folder), with ``npm ci && npm run build``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from workers.engine import Engine

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
ORIGIN = "https://shop.example"
_SOURCES = ("package.json", "package-lock.json", "build.mjs", "render-node.mjs", "src")

ROUTES = {
    "iso": ["/", "/?tab=reviews", "/about/caf%C3%A9", "/nowhere?x=1"],
    "router": ["/", "/product/42", "/missing"],
}
BUNDLES = [
    (app, tool, f"esbuild/{app}.js" if tool == "esbuild" else f"vite/{app}/bundle.js")
    for app in ROUTES
    for tool in ("esbuild", "vite")
]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; the corpus tests need Node 20 and npm")
    return path


def _source_hash() -> str:
    digest = hashlib.sha256()
    for name in _SOURCES:
        root = CORPUS_DIR / name
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file():
                digest.update(str(path.relative_to(CORPUS_DIR)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def corpus_build() -> Path:
    cache_root = Path(
        os.environ.get("ENDDEL_CORPUS_CACHE")
        or Path(tempfile.gettempdir()) / "enddel-corpus"
    )
    build_dir = cache_root / _source_hash()
    if (build_dir / "dist" / ".complete").is_file():
        return build_dir

    staging = Path(
        tempfile.mkdtemp(
            prefix="staging-",
            dir=cache_root.mkdir(parents=True, exist_ok=True) or cache_root,
        )
    )
    for name in _SOURCES:
        source = CORPUS_DIR / name
        if source.is_dir():
            shutil.copytree(source, staging / name)
        else:
            shutil.copy2(source, staging / name)
    npm = _tool("npm")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=staging, check=True)
    subprocess.run([npm, "run", "build"], cwd=staging, check=True)
    (staging / "dist" / ".complete").write_text("built\n")
    if build_dir.exists():
        shutil.rmtree(build_dir)
    staging.rename(build_dir)
    return build_dir


@pytest.mark.parametrize(("app", "tool", "output"), BUNDLES)
def test_corpus_html_matches_node(
    corpus_build: Path, app: str, tool: str, output: str
) -> None:
    bundle = corpus_build / "dist" / output
    routes = ROUTES[app]
    in_node = subprocess.run(
        [_tool("node"), "render-node.mjs", str(bundle), ORIGIN, *routes],
        cwd=corpus_build,
        capture_output=True,
        check=True,
        text=True,
    )
    expected = json.loads(in_node.stdout)

    engine = Engine(bundle.read_text(encoding="utf-8"), str(bundle), origin=ORIGIN)
    try:
        outcomes = {route: engine.render(route, 10.0) for route in routes}
    finally:
        engine.close()

    for route in routes:
        assert "error" not in outcomes[route].meta, outcomes[route].meta
        assert outcomes[route].html == expected[route], f"{tool} {app} {route}"
    assert len(set(expected.values())) == len(routes), (
        "routes should render differently"
    )
