"""Static files of the client build, with precompressed variants.

:class:`StaticFiles` serves ``GET`` and ``HEAD`` for regular files under the
client folder, except the SSR template ``index.html`` at its top. It returns
``None`` for anything else, and the request then falls through to SSR.

Design note. Each request runs three phases:

1. *Select* (in a worker thread, because every step is a blocking system
   call). The path segments are opened one directory at a time with
   ``openat(O_NOFOLLOW)`` from the client folder, so no symbolic link is ever
   followed, whether it points inside or outside, and no ``..`` can appear.
   The variants ``NAME.br`` and ``NAME.gz`` are found with ``lstat`` and a
   regular-file check, and :func:`choose_encoding` picks the smallest
   acceptable one. The choice is opened with ``O_NOFOLLOW | O_NONBLOCK`` and
   checked again with ``fstat``, so a file replaced by a link or a FIFO
   between the two steps is not served. Every header comes from that
   ``fstat``, which describes the very file that is read.
2. *Decide* (on the event loop, no I/O). The preconditions of RFC 9110 §13
   and the ranges of §14 turn into 200, 206, 304, 412 or 416 in
   :mod:`enddel.http.conditional` and :mod:`enddel.http.ranges`.
3. *Send*. The open file is read with ``pread`` in worker threads in chunks of
   :data:`CHUNK_BYTES`; the response body owns the descriptor and closes it
   when it is exhausted, fails or is cancelled.

Ranges apply to the representation that is sent: with ``Content-Encoding:
br`` the offsets count bytes of the ``.br`` file. Several ranges get a
``multipart/byteranges`` response for identity bodies only. For an encoded body
the whole variant is sent (200), because a ``Content-Encoding`` field on a
multipart response would read as if the multipart framing were encoded.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import secrets
import stat
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import trio
from quart import Request, Response
from werkzeug.http import http_date

from enddel.config import ConfigError
from enddel.http.conditional import (
    Validators,
    evaluate_preconditions,
    if_range_matches,
    make_etag,
)
from enddel.http.negotiation import choose_encoding
from enddel.http.ranges import (
    ByteRange,
    MultipartLayout,
    resolve_ranges,
    unsatisfied_content_range,
)
from enddel.http.static_paths import cache_control_for, content_type_for, safe_segments
from enddel.logs import static_log

__all__ = ["CHUNK_BYTES", "VARIANT_SUFFIXES", "StaticFiles"]

#: Precompressed variants: content coding to the suffix of the file beside the
#: original. Order does not matter, because :func:`choose_encoding` ranks them.
VARIANT_SUFFIXES: Mapping[str, str] = {"br": ".br", "gzip": ".gz"}

#: Bytes read per ``pread`` and sent per body chunk: about the initial HTTP/2
#: flow-control window (65,535 bytes, RFC 9113 §6.9.2). Each read is a thread
#: hop, so much smaller chunks cost CPU, and larger ones hold more memory per
#: slow client.
CHUNK_BYTES = 64 * 1024

#: The SSR template at the top of the client folder: it is never sent as is.
TEMPLATE_NAME = "index.html"

#: Errors from opening a path that mean "no servable file here". Any other
#: error (out of descriptors, I/O error) is a server fault and propagates.
_NOT_SERVABLE = frozenset(
    {
        errno.ENOENT,  # no such file or folder
        errno.ENOTDIR,  # a file where the path needs a folder
        errno.ELOOP,  # a symbolic link, rejected by O_NOFOLLOW
        errno.EACCES,  # not readable by the server
        errno.ENAMETOOLONG,
        errno.EISDIR,
    }
)

_READ_METHODS = frozenset({"GET", "HEAD"})

#: Request fields that are comma-separated lists: repeated lines join into one
#: value (RFC 9110 §5.3).
_LIST_FIELDS = ("Accept-Encoding", "If-Match", "If-None-Match")
#: Request fields with a single value. A repeated one is ambiguous, so it is
#: dropped, which means the full response for all of them except If-Range.
_SINGLE_FIELDS = ("If-Modified-Since", "If-Unmodified-Since", "Range")


class FileChangedError(Exception):
    """A file shrank while it was being sent, so its Content-Length was wrong."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Selection:
    """The file chosen for a request; ``file`` is open unless ``coding`` is None."""

    name: str
    #: The content coding sent; ``None`` when the client accepts none (406).
    coding: str | None
    #: Whether variants exist, so the response depends on Accept-Encoding.
    negotiated: bool
    #: Closing is idempotent, and the garbage collector closes a file that a
    #: response never got to send.
    file: io.FileIO | None = None
    status: os.stat_result | None = None
    #: The whole file, read in the selecting thread when it fits in one chunk,
    #: so that most build assets cost one thread hop instead of two.
    content: bytes | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class StaticFiles:
    """Serves the client build folder, as nginx's ``gzip_static`` would."""

    def __init__(self, root: Path) -> None:
        """Check ``root`` at start-up; raises ConfigError if it is not a folder."""
        resolved = root.resolve()
        if not resolved.is_dir():
            raise ConfigError(
                f"ENDDEL_CLIENT_DIR={str(root)!r}: not a folder, so no static "
                "file can be served. Point ENDDEL_CLIENT_DIR at the folder that "
                "your client build writes to."
            )
        self._root = resolved

    async def respond(self, request: Request) -> Response | None:
        """Return the response for a static file, or ``None`` to fall through."""
        if request.method not in _READ_METHODS:
            return None
        segments = safe_segments(request.path)
        if segments is None or segments == [TEMPLATE_NAME]:
            return None

        fields = _request_fields(request)
        selection = await trio.to_thread.run_sync(
            self._select, segments, fields.get("Accept-Encoding")
        )
        if selection is None:
            return None
        if selection.coding is None:
            return _not_acceptable()
        try:
            return _respond_with_file(request.method, fields, selection)
        except BaseException:
            selection.close()
            raise

    def _select(
        self, segments: list[str], accept_encoding: str | None
    ) -> _Selection | None:
        directory = _open_folder(self._root, segments[:-1])
        if directory is None:
            return None
        try:
            return _select_in(directory, segments[-1], accept_encoding)
        finally:
            os.close(directory)


def _open_folder(root: Path, segments: list[str]) -> int | None:
    """Open the folder ``root/segments...`` without following any link."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for segment in segments:
        try:
            child = os.open(
                segment,
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                dir_fd=fd,
            )
        except OSError as error:
            os.close(fd)
            if error.errno in _NOT_SERVABLE:
                return None
            raise
        os.close(fd)
        fd = child
    return fd


def _select_in(
    directory: int, name: str, accept_encoding: str | None
) -> _Selection | None:
    """Choose and open the original or a variant of ``name`` in ``directory``."""
    sizes = {"identity": _regular_size(directory, name)}
    if sizes["identity"] is None:
        return None
    for variant, suffix in VARIANT_SUFFIXES.items():
        sizes[variant] = _regular_size(directory, name + suffix)
    available = {coding: size for coding, size in sizes.items() if size is not None}
    negotiated = len(available) > 1

    coding = choose_encoding(accept_encoding, available)
    if coding is None:
        return _Selection(name, None, negotiated)
    file = _open_regular(directory, name + VARIANT_SUFFIXES.get(coding, ""))
    if file is None:
        # Deleted or replaced since the lstat: fall through rather than guess.
        return None
    status = os.fstat(file.fileno())
    content = None
    if status.st_size <= CHUNK_BYTES:
        # One byte more than the size shows a file that grew since the fstat.
        content = os.pread(file.fileno(), status.st_size + 1, 0)
        if len(content) != status.st_size:
            content = None  # changing under us: the streaming path checks it
    return _Selection(name, coding, negotiated, file, status, content)


def _regular_size(directory: int, name: str) -> int | None:
    try:
        status = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except OSError as error:
        if error.errno in _NOT_SERVABLE:
            return None
        raise
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _open_regular(directory: int, name: str) -> io.FileIO | None:
    try:
        # O_NONBLOCK: opening a FIFO swapped in after the lstat must not hang.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        fd = os.open(name, flags, dir_fd=directory)
    except OSError as error:
        if error.errno in _NOT_SERVABLE:
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return io.FileIO(fd, "rb")


def _request_fields(request: Request) -> dict[str, str]:
    """Collect the request fields that negotiation and preconditions read."""
    fields = {}
    for name in _LIST_FIELDS:
        if values := request.headers.getlist(name):
            fields[name] = ", ".join(values)
    for name in _SINGLE_FIELDS:
        if len(values := request.headers.getlist(name)) == 1:
            fields[name] = values[0]
    # A repeated If-Range becomes a value that never matches, so that the
    # Range it guards is not applied to a representation that may have changed.
    if values := request.headers.getlist("If-Range"):
        fields["If-Range"] = values[0] if len(values) == 1 else ""
    return fields


def _respond_with_file(
    method: str, fields: dict[str, str], selection: _Selection
) -> Response:
    """Apply preconditions and ranges, and build the response for an open file."""
    status = selection.status
    coding = selection.coding
    if status is None or coding is None:
        raise ValueError(f"selection {selection!r} has no open file")
    validators = Validators(
        etag=make_etag(status.st_mtime_ns, status.st_size, coding),
        last_modified=datetime.fromtimestamp(int(status.st_mtime), UTC),
    )
    headers = _representation_headers(selection, validators)

    precondition = evaluate_preconditions(method, fields, validators)
    if precondition is not None:
        selection.close()
        return _without_content(precondition, headers)

    ranges = _requested_ranges(fields, validators, status.st_size, coding)
    if ranges == ():
        selection.close()
        headers["Content-Range"] = unsatisfied_content_range(status.st_size)
        return _without_content(416, headers)
    return _with_content(method, selection, headers, ranges, status.st_size)


def _representation_headers(
    selection: _Selection, validators: Validators
) -> dict[str, str]:
    headers = {
        "ETag": validators.etag,
        "Cache-Control": cache_control_for(selection.name),
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
    }
    if validators.last_modified is not None:
        headers["Last-Modified"] = http_date(validators.last_modified)
    if selection.negotiated:
        headers["Vary"] = "Accept-Encoding"
    if selection.coding != "identity":
        headers["Content-Encoding"] = str(selection.coding)
    return headers


def _requested_ranges(
    fields: dict[str, str], validators: Validators, length: int, coding: str
) -> tuple[ByteRange, ...] | None:
    """Return the ranges to send: ``None`` for all, ``()`` for 416."""
    header = fields.get("Range")
    if header is None:
        return None
    # RFC 9110 §13.1.5: a failed If-Range means the whole representation.
    if not if_range_matches(fields.get("If-Range"), validators):
        return None
    ranges = resolve_ranges(header, length)
    # Several ranges of an encoded body: the whole body (see the module note).
    if ranges is not None and len(ranges) > 1 and coding != "identity":
        return None
    return ranges


def _with_content(
    method: str,
    selection: _Selection,
    headers: dict[str, str],
    ranges: tuple[ByteRange, ...] | None,
    length: int,
) -> Response:
    """Build a 200 or 206 response whose body streams the open file."""
    content_type = content_type_for(selection.name)
    pieces: list[bytes | ByteRange]
    if ranges is None:
        status_code, pieces = 200, [ByteRange(0, length)]
        headers["Content-Type"] = content_type
    elif len(ranges) == 1:
        status_code, pieces = 206, [ranges[0]]
        headers["Content-Type"] = content_type
        headers["Content-Range"] = ranges[0].content_range(length)
    else:
        status_code = 206
        layout = MultipartLayout.build(
            ranges, length, content_type, secrets.token_hex(16)
        )
        pieces = _multipart_pieces(layout)
        headers["Content-Type"] = layout.content_type
    content_length = sum(
        piece.size if isinstance(piece, ByteRange) else len(piece) for piece in pieces
    )

    if method == "HEAD" or selection.file is None:
        selection.close()
        response = Response(b"", status_code, headers)
    elif selection.content is not None:
        selection.close()
        content = selection.content
        whole = b"".join(
            content[piece.start : piece.stop] if isinstance(piece, ByteRange) else piece
            for piece in pieces
        )
        response = Response(whole, status_code, headers)
    else:
        body = _stream(selection.file, pieces, selection.name)
        # NOTE: Quart's RESPONSE_TIMEOUT (60 s by default) bounds the whole
        # send, so a large file to a slow client is cut off after it.
        response = Response(body, status_code, headers)
    # Set last, because Quart sets it to the length of b"" for HEAD.
    response.headers["Content-Length"] = str(content_length)
    return response


def _multipart_pieces(layout: MultipartLayout) -> list[bytes | ByteRange]:
    pieces: list[bytes | ByteRange] = []
    for part_headers, byte_range in layout.parts:
        pieces += [part_headers, byte_range, b"\r\n"]
    pieces.append(layout.closing)
    return pieces


async def _stream(
    file: io.FileIO, pieces: list[bytes | ByteRange], name: str
) -> AsyncGenerator[bytes, None]:
    """Yield ``pieces``, reading ranges from ``file``; always closes ``file``."""
    fd = file.fileno()
    try:
        for piece in pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            offset = piece.start
            while offset < piece.stop:
                size = min(CHUNK_BYTES, piece.stop - offset)
                chunk = await trio.to_thread.run_sync(os.pread, fd, size, offset)
                if not chunk:
                    static_log.error(
                        "static file %r shrank while being sent: no bytes at "
                        "offset %d of %d, so the connection is aborted. Replace "
                        "build files by renaming new ones into place.",
                        name, offset, piece.stop,
                    )  # fmt: skip
                    raise FileChangedError(f"{name!r} shrank while being sent")
                offset += len(chunk)
                yield chunk
    finally:
        file.close()


def _without_content(status_code: int, headers: dict[str, str]) -> Response:
    """Build a 304, 412 or 416 response: validators and Vary, no body."""
    # An empty body must not claim a coding that a client would try to decode.
    headers = {k: v for k, v in headers.items() if k != "Content-Encoding"}
    response = Response(b"", status_code, headers)
    # Quart adds a default type and a zero length, which would describe the
    # representation wrongly (RFC 9110 §15.4.5 for 304).
    del response.headers["Content-Type"]
    if status_code == 304:
        del response.headers["Content-Length"]
    return response


def _not_acceptable() -> Response:
    """Build the 406 for a client that rejects identity and every variant."""
    body = (
        "406 Not Acceptable: Accept-Encoding rejects every available coding "
        "of this file, identity included.\n"
    )
    response = Response(body, 406, {"Vary": "Accept-Encoding"})
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
