"""The API reference page at /docs: it renders in a real browser, from this host alone.

Debian's Chromium (`make browser`) opens the page served by the api_docs function, the
module the stack and every cluster serve, and Swagger UI must list every operation of
the committed document with nothing failing to load and nothing fetched from elsewhere.
The last test asks the whole stack's front door for the page, so /docs is routed there.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import flask
import pytest
import requests
from playwright.sync_api import ConsoleMessage, Page, Request, Response, sync_playwright
from werkzeug.serving import make_server

from shared.edge import api_page
from tests.helpers.events import app
from tests.helpers.marketplace import Marketplace

COMMITTED = Path(__file__).resolve().parents[2] / "functions" / "openapi.json"
CHROMIUM = "/usr/bin/chromium"
# No sandbox (we may run as root), and none of the browser's own calls home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operations() -> dict[tuple[str, str], str]:
    """(method, path) -> operationId, for every operation of the committed document."""
    document = json.loads(COMMITTED.read_text())
    return {(method, path): operation["operationId"]
            for path, item in document["paths"].items()
            for method, operation in item.items() if method in METHODS}


@pytest.fixture(scope="module")
def function_app() -> flask.Flask:
    return app("api_docs")


@pytest.fixture(scope="module")
def base_url(function_app: flask.Flask) -> Iterator[str]:
    """The api_docs function on a free port of this machine, for the browser."""
    server = make_server("127.0.0.1", 0, function_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's Chromium is not installed ({CHROMIUM}): `make browser`"
                    " installs it", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_the_page_lists_every_operation_and_loads_only_from_its_host(
        page: Page, base_url: str) -> None:
    failed: list[str] = []
    refused: list[str] = []
    errors: list[str] = []
    elsewhere: list[str] = []
    local = urlsplit(base_url).netloc

    def requested(request: Request) -> None:
        where = urlsplit(request.url)
        if where.scheme not in {"data", "blob"} and where.netloc != local:
            elsewhere.append(request.url)

    def answered(response: Response) -> None:
        if response.status >= 400:
            refused.append(f"{response.status} {response.url}")

    def logged(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("request", requested)
    page.on("requestfailed", lambda request: failed.append(
        f"{request.url}: {request.failure}"))
    page.on("response", answered)
    page.on("console", logged)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))

    expected = operations()
    page.goto(base_url + api_page.PAGE, wait_until="load")
    page.wait_for_function("n => document.querySelectorAll('.opblock').length >= n",
                           arg=len(expected), timeout=30_000)
    page.wait_for_load_state("networkidle")

    shown = page.eval_on_selector_all(".opblock", """blocks => blocks.map(block => [
        block.querySelector('.opblock-summary-method').textContent.trim().toLowerCase(),
        block.querySelector('.opblock-summary-path').getAttribute('data-path'),
        block.querySelector('.opblock-summary-operation-id').textContent.trim()])""")
    assert len(shown) == len(expected)
    assert {(method, path): operation_id for method, path, operation_id in shown} == expected
    paths = {path for _, path, _ in shown}
    assert {"/bookings", "/courses", "/auth/login"} <= paths
    assert page.title() == "Marketplace API"
    assert not failed, failed
    assert not refused, refused
    assert not errors, errors
    assert not elsewhere, elsewhere


def test_only_the_viewers_files_are_served(function_app: flask.Flask) -> None:
    client = function_app.test_client()
    page_ = client.get(api_page.PAGE)
    assert page_.status_code == 200
    assert page_.mimetype == "text/html"
    policy = page_.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "default-src 'none'" in policy
    assert "http" not in page_.get_data(as_text=True), "the page names no other host"
    for name, mimetype in [("swagger-ui-bundle.js", "text/javascript"),
                           ("swagger-ui.css", "text/css"), ("init.js", "text/javascript"),
                           ("favicon-32x32.png", "image/png")]:
        asset = client.get(api_page.ASSETS + name)
        assert asset.status_code == 200, name
        assert asset.mimetype == mimetype, name
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        again = client.get(api_page.ASSETS + name,
                           headers={"If-None-Match": asset.headers["ETag"]})
        assert again.status_code == 304, name
    assert "max-age" in client.get(api_page.ASSETS + "swagger-ui.css").headers["Cache-Control"]
    for path in ["index.html", "swagger-initializer.js", "../__init__.py", "..%2F__init__.py",
                 "%2e%2e/%2e%2e/openapi.json", "/etc/passwd", ""]:
        assert client.get(api_page.ASSETS + path).status_code == 404, path
    assert client.get(api_page.PAGE + "/elsewhere").status_code == 404
    assert client.post(api_page.PAGE).status_code == 405


def test_the_stack_serves_the_page(marketplace: Marketplace) -> None:
    for path, mimetype in [(api_page.PAGE, "text/html"),
                           (api_page.ASSETS + "swagger-ui-bundle.js", "text/javascript"),
                           (api_page.ASSETS + "init.js", "text/javascript")]:
        answer = requests.get(marketplace.url + path, timeout=30)
        assert answer.status_code == 200, path
        assert answer.headers["Content-Type"].split(";")[0] == mimetype, path
