"""The API reference page at /docs: Swagger UI over the committed OpenAPI document.

The viewer's files come from the `swagger-ui-bundle-v2` wheel and are served by
the same function as the document, so the page needs no network but the
function's own host: nothing is fetched from a CDN, and a strict
Content-Security-Policy (scripts from 'self' only) holds, which is why the
viewer's start-up script is a file of its own rather than an inline one.

Only the files named in `VENDORED` (and the start-up script) are served: a
path must be one of those names before it is read, so no request reaches any
other file of the wheel or of the machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import flask

from shared.edge.api import not_found

PAGE = "/docs"
ASSETS = f"{PAGE}/assets/"

# What the page loads from the wheel; the source maps only when a browser's tools ask.
VENDORED = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png",
            "swagger-ui.css.map", "swagger-ui-bundle.js.map")

# By suffix, not from the machine's MIME table, which names scripts differently by release.
MIMETYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png",
             ".map": "application/json"}

INDEX = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Marketplace API</title>
  <link rel="stylesheet" href="{ASSETS}swagger-ui.css">
  <link rel="icon" type="image/png" sizes="32x32" href="{ASSETS}favicon-32x32.png">
  <link rel="icon" type="image/png" sizes="16x16" href="{ASSETS}favicon-16x16.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS}swagger-ui-bundle.js"></script>
  <script src="{ASSETS}init.js"></script>
</body>
</html>
"""

# No validator badge (it would call an outside service), no top bar (its box for
# another document's URL would invite fetching anything); each operation shows the
# operationId a generated client names its method after.
INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayOperationId: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""

# Everything from this host but the viewer's icons (data: images in its stylesheet);
# "Try it out" calls this host only, and nothing may frame the page.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
          " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

# The page and the start-up script change with a deployment, so a browser checks them
# each time (a 304 when unchanged); the viewer's files change only with the wheel.
FRESH = "no-cache"
KEPT = "public, max-age=86400"


@dataclass(frozen=True)
class Asset:
    """One file of the page, with how long a browser may keep it."""

    body: bytes
    mimetype: str
    cache_control: str

    @cached_property
    def etag(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:32]


def _vendor_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # imported on the first page view only

    return Path(str(swagger_ui_path))


@cache
def _vendored(name: str) -> Asset:
    return Asset((_vendor_dir() / name).read_bytes(), MIMETYPES[Path(name).suffix], KEPT)


PAGE_ASSET = Asset(INDEX.encode(), "text/html", FRESH)
INIT_ASSET = Asset(INIT.encode(), "text/javascript", FRESH)


def asset(path: str) -> Asset | None:
    """What `path` serves, or None: the page, the start-up script or one vendored file."""
    if path in {PAGE, f"{PAGE}/"}:
        return PAGE_ASSET
    name = path.removeprefix(ASSETS) if path.startswith(ASSETS) else ""
    if name == "init.js":
        return INIT_ASSET
    return _vendored(name) if name in VENDORED else None


def serve(request: flask.Request) -> flask.Response:
    """Answer a GET or HEAD under /docs."""
    found = asset(request.path)
    if found is None:
        return not_found("page").response()
    response = flask.Response(found.body, 200, mimetype=found.mimetype)
    response.headers["Cache-Control"] = found.cache_control
    response.headers["X-Content-Type-Options"] = "nosniff"
    if found.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = POLICY
        response.headers["Referrer-Policy"] = "no-referrer"
    response.set_etag(found.etag)
    response.make_conditional(request)  # a 304 when the browser's copy is current
    return response
