"""Frames between the render pool and a render worker, without processes."""

from __future__ import annotations

import struct

import pytest

from workers.protocol import (
    MAX_FRAME_BYTES,
    Frame,
    FrameReader,
    Kind,
    ProtocolError,
    encode_frame,
)


def test_round_trip_in_single_bytes() -> None:
    body = "<p>caf\u00e9 \u2603</p>".encode()
    data = encode_frame(Kind.RESULT, 7, {"status": 404}, body) + encode_frame(
        Kind.READY, 0, {}
    )
    reader = FrameReader()
    frames: list[Frame] = []
    for index in range(len(data)):
        frames.extend(reader.feed(data[index : index + 1]))
    assert frames == [
        Frame(Kind.RESULT, 7, {"status": 404}, body),
        Frame(Kind.READY, 0, {}),
    ]
    assert reader.pending_bytes == 0


def test_partial_frame_waits() -> None:
    data = encode_frame(Kind.RENDER, 1, {"url": "/"})
    reader = FrameReader()
    assert list(reader.feed(data[:-1])) == []
    assert reader.pending_bytes == len(data) - 1
    assert list(reader.feed(data[-1:])) == [Frame(Kind.RENDER, 1, {"url": "/"})]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("<I", 3) + b"abc", "invalid frame length 3"),
        (struct.pack("<I", MAX_FRAME_BYTES + 1), "invalid frame length"),
        (struct.pack("<IBQI", 13, 99, 0, 0), "invalid frame header"),
        (struct.pack("<IBQI", 14, 1, 0, 50) + b"x", "overruns its frame"),
        (struct.pack("<IBQI", 15, 1, 0, 2) + b"[]", "not a JSON object"),
        (struct.pack("<IBQI", 15, 1, 0, 2) + b"{x", "invalid frame header"),
    ],
)
def test_invalid_frames_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        list(FrameReader().feed(data))


def test_oversized_frame_is_not_encoded() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode_frame(Kind.RESULT, 1, {}, b"x" * MAX_FRAME_BYTES)
