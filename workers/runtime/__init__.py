"""The JavaScript runtime of a render worker: the web-platform baseline and its host.

``baseline.js`` is built from ``src/`` by ``npm ci && npm run build`` in this
folder and committed, so installing enddel needs no npm. :mod:`.host` holds the
Python side of ``fetch``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BASELINE_PATH", "read_baseline"]

#: The built baseline, evaluated in every render worker before the prelude and bundle.
BASELINE_PATH = Path(__file__).resolve().parent / "baseline.js"


def read_baseline() -> str:
    """Return the baseline's source, raising OSError if the build is missing."""
    return BASELINE_PATH.read_text(encoding="utf-8")
