"""Entry point of a render worker process: ``python -m workers --bundle PATH``.

The worker loads the bundle into one V8 context, reports READY (or
LOAD_FAILED), then answers RENDER frames from stdin one at a time with RESULT
frames on stdout until stdin closes. It exits 0 on end of input, 3 when its
context is wedged, and 2 when the pool sent something that is not a frame.

The server starts workers with exec, never with fork: V8 does not survive a
fork of a process that has started it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import BinaryIO

from workers.engine import (
    DEFAULT_ORIGIN,
    EXIT_WEDGED,
    BundleLoadError,
    ConsoleLines,
    Engine,
    JSOOMException,
    JSTimeoutException,
    WedgedError,
)
from workers.protocol import Frame, FrameReader, Kind, ProtocolError, encode_frame

EXIT_PROTOCOL = 2
_READ_BYTES = 1 << 16


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # A terminal's Ctrl+C and a service manager's SIGTERM reach the whole
    # process group. The server decides when a worker stops, by closing its
    # stdin once its requests have drained, so a worker ignores both and
    # finishes the render in progress. SIGKILL still ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    output = _claim_stdout()

    engine = _load(args, output)
    if engine is None:
        return 1
    try:
        return _serve(engine, output)
    finally:
        engine.close()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument(
        "--bundle-name",
        help="name of the bundle in stack traces and errors; default: --bundle",
    )
    parser.add_argument(
        "--prelude",
        type=Path,
        help="script evaluated after the baseline, before the bundle",
    )
    parser.add_argument(
        "--prelude-name",
        help="name of the prelude in stack traces and errors; default: --prelude",
    )
    parser.add_argument("--heap-bytes", type=int, help="V8 heap limit, in bytes")
    parser.add_argument(
        "--origin",
        default=DEFAULT_ORIGIN,
        help="public origin (scheme://host[:port]) that location is built from",
    )
    parser.add_argument(
        "--api-upstream",
        help="base URL that fetch of same-origin /api/ URLs goes to; none: rejected",
    )
    parser.add_argument(
        "--fetch-allow",
        action="append",
        default=[],
        metavar="HOST",
        help="a host that fetch may reach besides the upstream; repeat for more",
    )
    return parser.parse_args(argv)


def _claim_stdout() -> BinaryIO:
    """Keep fd 1 for frames and point everything else that prints at stderr."""
    output = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return output


def _load(args: argparse.Namespace, output: BinaryIO) -> Engine | None:
    try:
        source = args.bundle.read_text(encoding="utf-8")
        prelude = None
        if args.prelude is not None:
            prelude = args.prelude.read_text(encoding="utf-8")
        engine = Engine(
            source,
            args.bundle_name or str(args.bundle),
            heap_bytes=args.heap_bytes,
            prelude_source=prelude,
            prelude_name=args.prelude_name or str(args.prelude),
            origin=args.origin,
            api_upstream=args.api_upstream,
            fetch_allowed_hosts=args.fetch_allow,
        )
    except BundleLoadError as error:
        failed = {"error": str(error), "console": error.console}
        output.write(encode_frame(Kind.LOAD_FAILED, 0, failed))
        return None
    except (OSError, UnicodeDecodeError) as error:
        output.write(encode_frame(Kind.LOAD_FAILED, 0, {"error": str(error)}))
        return None
    ready = {"pid": os.getpid(), "console": engine.load_console}
    output.write(encode_frame(Kind.READY, 0, ready))
    return engine


def _serve(engine: Engine, output: BinaryIO) -> int:
    reader = FrameReader()
    while True:
        data = os.read(0, _READ_BYTES)
        if not data:
            return 0
        try:
            frames = list(reader.feed(data))
        except ProtocolError as error:
            print(f"render worker {os.getpid()}: {error}", file=sys.stderr)
            return EXIT_PROTOCOL
        for frame in frames:
            try:
                output.write(_render(engine, frame))
            except WedgedError:
                return EXIT_WEDGED


def _render(engine: Engine, frame: Frame) -> bytes:
    url = frame.meta.get("url")
    timeout = frame.meta.get("timeout")
    if frame.kind is not Kind.RENDER or not isinstance(url, str):
        return _error_frame(frame.job_id, "ProtocolError", f"bad job {frame.meta!r}")
    if not isinstance(timeout, int | float) or timeout <= 0:
        return _error_frame(frame.job_id, "TimeoutError", "deadline passed in queue")

    try:
        outcome = engine.render(url, float(timeout))
    except JSTimeoutException:
        return _error_frame(
            frame.job_id,
            "TimeoutError",
            f"render exceeded {timeout:.3f} s",
            engine.abandoned_console,
        )
    except JSOOMException:
        return _error_frame(frame.job_id, "OutOfMemory", "V8 heap limit reached")
    except WedgedError:
        raise
    except Exception as error:  # noqa: BLE001 - a failed render must not kill the worker
        return _error_frame(frame.job_id, type(error).__name__, traceback.format_exc())
    # The heap size after each render lets the pool recycle a worker whose
    # bundle leaks (ENDDEL_WORKER_MAX_HEAP_MB).
    meta = dict(outcome.meta, seconds=outcome.seconds, heap=engine.heap_used_bytes())
    return encode_frame(Kind.RESULT, frame.job_id, meta, outcome.html.encode())


def _error_frame(
    job_id: int, name: str, message: str, console: ConsoleLines | None = None
) -> bytes:
    meta: dict[str, object] = {"error": {"name": name, "message": message, "stack": ""}}
    if console:
        meta["console"] = console
    return encode_frame(Kind.RESULT, job_id, meta)


if __name__ == "__main__":
    sys.exit(main())
