"""The demo shop in headless Chromium, served by a real enddel server.

Each test loads pages from a hypercorn process that renders the demo bundle,
then checks in the browser that the client hydrated the server's markup
instead of replacing it, and that links switch pages without a reload. The
product pages load their product from the demo API upstream, a process of its
own: the server during its render, the browser through enddel's /api proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Request,
    expect,
    sync_playwright,
)

from tests.conftest import run_server
from tests.demo_upstream import run_demo_api

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
# Flags that keep Chromium from reaching any host but the test server.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Records every element removed from the app's root element, from the first
# parsed byte on. Parsing only inserts nodes, so a removal means the client
# threw away server markup instead of hydrating it.
RECORD_REMOVALS = """
window.__removedFromApp = [];
new MutationObserver((records) => {
  const app = document.getElementById("app");
  for (const record of records) {
    if (!app || !(record.target === app || app.contains(record.target))) continue;
    for (const node of record.removedNodes) {
      if (node.nodeType !== Node.ELEMENT_NODE) continue;
      window.__removedFromApp.push(node.outerHTML.slice(0, 80));
    }
  }
}).observe(document, { childList: true, subtree: true });
"""


@dataclass
class PageErrors:
    """Console errors and uncaught exceptions seen on one page."""

    messages: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.messages.append(
                f"console: {message.text} at {message.location['url']}"
            )

    def on_page_error(self, error: Error) -> None:
        self.messages.append(f"uncaught: {error.message}")


@pytest.fixture(scope="module")
def shop_url(demo_build: Path) -> Iterator[str]:
    """Base URL of an enddel server that renders the demo build."""
    with run_demo_api() as upstream:
        settings = {
            "ENDDEL_BUNDLE": str(demo_build / "server" / "bundle.js"),
            "ENDDEL_CLIENT_DIR": str(demo_build / "client"),
            "ENDDEL_RENDER_WORKERS": "1",
            "ENDDEL_API_UPSTREAM": upstream,
        }
        with run_server(settings) as server:
            yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def page(browser: Browser, page_errors: PageErrors) -> Iterator[Page]:
    """A fresh page in its own browser context, so saved carts stay per test."""
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(RECORD_REMOVALS)
    page.on("console", page_errors.on_console)
    page.on("pageerror", page_errors.on_page_error)
    yield page
    context.close()


def open_hydrated(page: Page, url: str) -> int:
    """Load ``url``, wait until the client has hydrated, and return the status."""
    response = page.goto(url)
    assert response is not None, f"no response for {url}"
    expect(page.locator("#app")).to_have_attribute("data-hydrated", "true")
    page.wait_for_load_state("networkidle")
    return response.status


def is_document_load_error(message: str, status: int, url: str) -> bool:
    """Tell whether ``message`` is Chromium's log line for the document's status.

    The reason phrase between the brackets depends on the server, so it is not
    compared.
    """
    prefix = (
        "console: Failed to load resource: the server responded with a status "
        f"of {status} ("
    )
    return message.startswith(prefix) and message.endswith(f") at {url}")


@pytest.mark.parametrize(
    ("path", "status", "heading", "title"),
    [
        ("/", 200, "Everyday things, made to last", "Enddel Shop"),
        ("/products?page=2", 200, "Products, page 2 of 4", "Products, page 2 of 4"),
        ("/products/brass-pen", 200, "Brass Pen", "Brass Pen"),
        ("/about", 200, "About this shop", "About"),
        ("/no/such/page", 404, "Page not found", "Page not found"),
    ],
)
def test_page_hydrates_server_markup(
    page: Page,
    page_errors: PageErrors,
    shop_url: str,
    path: str,
    status: int,
    heading: str,
    title: str,
) -> None:
    assert open_hydrated(page, shop_url + path) == status
    expect(page.locator("h1")).to_have_text(heading)
    assert title in page.title()
    assert page.locator("title").count() == 1
    assert page.evaluate("window.__removedFromApp") == []
    # Chromium logs every error response as a failed resource load, the
    # not-found document itself included.
    document_errors = [
        message
        for message in page_errors.messages
        if is_document_load_error(message, status, shop_url + path)
    ]
    other_errors = [m for m in page_errors.messages if m not in document_errors]
    assert len(document_errors) == (0 if status == 200 else 1)
    assert other_errors == []


def test_link_click_keeps_document(
    page: Page, page_errors: PageErrors, shop_url: str
) -> None:
    open_hydrated(page, shop_url + "/")
    page.evaluate("window.__sameDocument = 'kept'")

    # About is the lazy route, so this click also loads its chunk.
    page.locator("header").get_by_role("link", name="About").click()
    expect(page.locator("h1")).to_have_text("About this shop")
    assert page.url == shop_url + "/about"
    expect(page).to_have_title("About · Enddel Shop")

    page.locator("header").get_by_role("link", name="Products").click()
    expect(page.locator("h1")).to_have_text("Products, page 1 of 4")
    page.get_by_role("link", name="2", exact=True).click()
    expect(page.locator("h1")).to_have_text("Products, page 2 of 4")
    assert page.url == shop_url + "/products?page=2"

    page.go_back()
    expect(page.locator("h1")).to_have_text("Products, page 1 of 4")
    assert page.evaluate("window.__sameDocument") == "kept"
    assert page_errors.messages == []


def test_cart_count_follows_clicks(
    page: Page, page_errors: PageErrors, shop_url: str
) -> None:
    open_hydrated(page, shop_url + "/products/brass-pen")
    badge = page.get_by_test_id("cart-count")
    expect(badge).to_have_text("0")

    page.get_by_role("button", name="Add to cart").click()
    expect(badge).to_have_text("1")
    page.get_by_role("button", name="Add another (1 in cart)").click()
    expect(badge).to_have_text("2")

    page.locator("header").get_by_role("link", name="Cart").click()
    expect(page.get_by_role("row", name="Brass Pen")).to_contain_text("2")

    # The saved cart comes back after a full reload, once the client hydrated.
    open_hydrated(page, shop_url + "/")
    expect(badge).to_have_text("2")
    assert page_errors.messages == []


def record_api_requests(page: Page) -> list[str]:
    """Collect the URL of every request the page sends under /api/ from now on."""
    urls: list[str] = []

    def on_request(request: Request) -> None:
        if "/api/" in request.url:
            urls.append(request.url)

    page.on("request", on_request)
    return urls


def test_product_page_hydrates_without_fetch(
    page: Page, page_errors: PageErrors, shop_url: str
) -> None:
    api_requests = record_api_requests(page)
    open_hydrated(page, shop_url + "/products/pour-over-kettle")
    expect(page.locator("h1")).to_have_text("Pour-Over Kettle")
    assert api_requests == []
    assert page.evaluate("window.__removedFromApp") == []
    assert page_errors.messages == []


def test_product_link_fetches_through_proxy(
    page: Page, page_errors: PageErrors, shop_url: str
) -> None:
    open_hydrated(page, shop_url + "/products")
    page.evaluate("window.__sameDocument = 'kept'")
    api_requests = record_api_requests(page)

    card = page.locator(".card__name").get_by_role("link", name="Cast Iron Skillet")
    with page.expect_response(shop_url + "/api/products/cast-iron-skillet") as response:
        card.click()
    assert response.value.status == 200
    expect(page.locator("h1")).to_have_text("Cast Iron Skillet")
    expect(page).to_have_title("Cast Iron Skillet · Enddel Shop")
    assert page.url == shop_url + "/products/cast-iron-skillet"

    # Back to the list and to the product again: the response is kept.
    page.go_back()
    expect(page.locator("h1")).to_have_text("Products, page 1 of 4")
    page.go_forward()
    expect(page.locator("h1")).to_have_text("Cast Iron Skillet")
    assert api_requests == [shop_url + "/api/products/cast-iron-skillet"]
    assert page.evaluate("window.__sameDocument") == "kept"
    assert page_errors.messages == []


@pytest.fixture(scope="module")
def offline_shop_url(demo_build: Path) -> Iterator[str]:
    """Base URL of a server whose API upstream is a closed loopback port."""
    with run_server({"ENDDEL_RENDER_WORKERS": "1"}) as server:
        yield server.url


def test_unavailable_product_hydrates(
    page: Page, page_errors: PageErrors, offline_shop_url: str
) -> None:
    url = offline_shop_url + "/products/brass-pen"
    api_requests = record_api_requests(page)
    assert open_hydrated(page, url) == 503
    expect(page.locator("h1")).to_have_text("Product unavailable")
    assert api_requests == []
    assert page.evaluate("window.__removedFromApp") == []
    other_errors = [
        m for m in page_errors.messages if not is_document_load_error(m, 503, url)
    ]
    assert len(page_errors.messages) == 1
    assert other_errors == []
