"""Placing rendered fragments into the client build's index.html."""

from __future__ import annotations

import pytest

from enddel.template import PageTemplate, TemplateError, is_document

VITE_INDEX = (
    b"<!doctype html><html><head><!--ssr-head--><script src=/a.js></script></head>"
    b'<body><div id="app"><!--ssr-outlet--></div></body></html>'
)


def test_fragment_and_head_are_placed() -> None:
    template = PageTemplate(VITE_INDEX, "index.html")
    page = template.page(b"<p>hi</p>", b"<title>T</title>")
    assert page == (
        b"<!doctype html><html><head><title>T</title><script src=/a.js></script></head>"
        b'<body><div id="app"><p>hi</p></div></body></html>'
    )


def test_shell_has_empty_outlet() -> None:
    template = PageTemplate(VITE_INDEX, "index.html")
    assert b'<div id="app"></div>' in template.shell()
    assert b"<!--" not in template.shell()


def test_head_without_mark_goes_before_head_close() -> None:
    index = b"<html><HEAD><meta x></HEAD ><body><!--ssr-outlet--></body></html>"
    page = PageTemplate(index, "index.html").page(b"<p/>", b"<title>T</title>")
    assert (
        page == b"<html><HEAD><meta x><title>T</title></HEAD ><body><p/></body></html>"
    )


def test_template_without_outlet_rejects_fragments() -> None:
    template = PageTemplate(
        b"<html><head></head><body></body></html>", "dist/index.html"
    )
    assert not template.has_outlet
    with pytest.raises(
        TemplateError, match=r"dist/index\.html has no <!--ssr-outlet-->"
    ):
        template.page(b"<p/>")


def test_outlet_before_head_mark_is_an_error() -> None:
    with pytest.raises(TemplateError, match="must come after"):
        PageTemplate(b"<!--ssr-outlet--><!--ssr-head-->", "index.html")


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (b"<!DOCTYPE html><html>", True),
        (b"  \n<!doctype html>", True),
        (b"\xef\xbb\xbf<html lang=en>", True),
        (b"<HTML>", True),
        (b"<div>", False),
        (b"<htmlish>", False),
        (b"text <!doctype html>", False),
    ],
)
def test_is_document(html: bytes, expected: bool) -> None:
    assert is_document(html) is expected
