"""The encoding and masking of log lines, without a server: lossless for any bytes, secrets
masked however the output is chunked."""

from __future__ import annotations

import random

import pytest

from reconciler.worker.output import LINE_MAX_BYTES, LineSplitter, Masker, decode_line, encode_line


@pytest.mark.parametrize(
    "raw",
    [b"", b"plain", b"a\x00b", b"\\x00", b"\\", b"\xff\\xff\xff", "é€🚀".encode(), b"\x00\\"],
)
def test_encoding_is_lossless_and_text_is_left_alone(raw: bytes) -> None:
    text, escaped = encode_line(raw)
    assert "\x00" not in text
    assert decode_line(text, escaped) == raw
    if raw and b"\x00" not in raw and raw.isascii():
        assert (text, escaped) == (raw.decode(), False)


def test_random_bytes_round_trip() -> None:
    rng = random.Random(8)
    for _ in range(2000):
        raw = bytes(
            rng.choice(b"\x00\\x0a\xff\xc3\xa9\xe2\x82\xac") for _ in range(rng.randint(0, 30))
        )
        text, escaped = encode_line(raw)
        assert "\x00" not in text and decode_line(text, escaped) == raw


def lines_of(chunks: list[bytes], secrets: list[bytes]) -> list[bytes]:
    splitter = LineSplitter(Masker(secrets))
    out = [piece for chunk in chunks for piece, _ in splitter.feed(chunk)]
    return out + [piece for piece, _ in splitter.close()]


def test_a_secret_is_masked_whatever_the_chunking() -> None:
    secret = b"hunter2-s3cr3t"
    output = b"login with " + secret + b" ok\nagain:" + secret + b"\n"
    for size in range(1, len(output) + 1):
        chunks = [output[i : i + size] for i in range(0, len(output), size)]
        assert lines_of(chunks, [secret]) == [b"login with *** ok", b"again:***"]


def test_a_secret_across_a_long_line_cut_is_masked() -> None:
    secret = b"TOPSECRETVALUE"
    for offset in range(-len(secret), 1):
        head = b"x" * (LINE_MAX_BYTES + offset)
        pieces = lines_of([head, secret[:5], secret[5:], b"tail\n"], [secret])
        joined = b"".join(pieces)
        assert secret not in joined and joined == head + b"***tail"


def test_the_longest_secret_wins_when_one_contains_another() -> None:
    assert Masker([b"abc", b"abcdef"]).mask(b"abcdef abc") == b"*** ***"


def test_the_last_piece_of_a_long_line_is_never_continued_whatever_the_chunks() -> None:
    for total in (LINE_MAX_BYTES + 1, 2 * LINE_MAX_BYTES + 1, 3 * LINE_MAX_BYTES):
        for size in (4096, LINE_MAX_BYTES, LINE_MAX_BYTES + 1):
            data = b"x" * total
            splitter = LineSplitter(Masker([]))
            pieces = [p for i in range(0, total, size) for p in splitter.feed(data[i : i + size])]
            pieces += list(splitter.close())
            assert b"".join(p for p, _ in pieces) == data
            assert [c for _, c in pieces][-1] is False and all(c for _, c in pieces[:-1])
