"""How the admin app answers people it does not let in, and how it says to sign in.

``AdminAuth`` tells the admin app how the host application authenticates, for:

- **browsers** that open an admin page without access get a page, not raw JSON: sent to
  the sign-in page (``303``, with the return path as ``?next=``) when there is one, else a
  small HTML page (``401``, with the ``WWW-Authenticate`` challenge if one is set; ``403``);
- **API clients** get JSON errors, a 401 with the challenge — but not a browser's own
  scripts (``is_browser_script``), for which the browser would open a password dialog;
- **the OpenAPI document** lists the schemes in ``components.securitySchemes`` and requires
  them (any one of them) on every operation.

A request is a browser's page load when it is a ``GET``/``HEAD`` that browsers send to
show a page: ``Sec-Fetch-Mode: navigate`` with ``Sec-Fetch-Dest: document`` (what Chromium,
Firefox and Safari send to ``https`` and local origins). Without fetch metadata (plain
``http`` to another host, older browsers), an ``Accept`` header that names ``text/html``
with a higher quality than it gives JSON. Everything else — ``fetch()`` (``Sec-Fetch-Mode:
cors``), ``curl``'s ``*/*``, ``Accept: application/json`` — is an API client: JSON errors.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, RedirectResponse, Response

# The types of OpenAPI 3.1 Security Scheme Objects.
SCHEME_TYPES = ("apiKey", "http", "mutualTLS", "oauth2", "openIdConnect")
_COMPONENT_NAME = re.compile(r"[A-Za-z0-9._-]+")  # OpenAPI's rule for component names
_QUERY_NAME = re.compile(r"[A-Za-z0-9._~-]+")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_JSON_RANGES = ("application/json", "application/*", "*/*")  # most specific first


@dataclass(frozen=True, slots=True)
class AdminAuth:
    """How the host application signs people in (see the module docstring).

    - ``sign_in_url``: where a browser without access to the admin app is sent (303), with
      the path it asked for in the ``next_param`` query parameter: ``/sign-in?next=/admin/
      audit/``. A path as the browser must request it (or an absolute URL); the host's
      sign-in handler must redirect only to local paths afterwards.
    - ``challenge``: the ``WWW-Authenticate`` value sent with every 401, e.g.
      ``Basic realm="audit"`` (RFC 9110 asks a 401 to carry one).
    - ``security_schemes``: OpenAPI Security Scheme Objects by name, e.g.
      ``{"session": {"type": "apiKey", "in": "cookie", "name": "session"},
      "basic": {"type": "http", "scheme": "basic"}}``; the document requires any one of them.
    """

    sign_in_url: str | None = None
    next_param: str = "next"
    challenge: str | None = None
    security_schemes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = self.sign_in_url
        if url is not None and not (
            isinstance(url, str) and url.startswith(("/", "https://", "http://"))
        ):
            raise ValueError("sign_in_url must be a path (/sign-in) or an http(s) URL")
        if url is not None and not _is_printable_ascii(url):
            raise ValueError("sign_in_url must be printable ASCII (percent-encode the rest)")
        if not (isinstance(self.next_param, str) and _QUERY_NAME.fullmatch(self.next_param)):
            raise ValueError("next_param must be a plain query parameter name")
        if self.challenge is not None and not (
            isinstance(self.challenge, str)
            and self.challenge.strip()
            and _is_printable_ascii(self.challenge.replace(" ", ""))
        ):
            raise ValueError('challenge must be a WWW-Authenticate value: Basic realm="audit"')
        schemes: dict[str, dict[str, Any]] = {}
        for name, scheme in dict(self.security_schemes).items():
            if not (isinstance(name, str) and _COMPONENT_NAME.fullmatch(name)):
                raise ValueError(f"security scheme name {name!r}: use letters, digits, . _ -")
            if not isinstance(scheme, Mapping) or scheme.get("type") not in SCHEME_TYPES:
                raise ValueError(
                    f"security scheme {name!r} must be an OpenAPI Security Scheme Object "
                    f"with a type of {', '.join(SCHEME_TYPES)}"
                )
            schemes[name] = dict(scheme)
        object.__setattr__(self, "security_schemes", schemes)  # a copy nobody else holds

    def security(self) -> list[dict[str, list[str]]]:
        """The OpenAPI security requirement: any one of the schemes."""
        return [{name: []} for name in self.security_schemes]


def _is_printable_ascii(text: str) -> bool:
    return all("!" <= char <= "~" for char in text)


def is_page_load(method: str, headers: Headers) -> bool:
    """Whether a browser sent this request to show the answer as a page (module docstring)."""
    if method not in ("GET", "HEAD"):
        return False
    mode = headers.get("sec-fetch-mode")
    if mode is not None:  # fetch metadata, set by the browser itself, decides
        return mode == "navigate" and headers.get("sec-fetch-dest", "document") == "document"
    return _prefers_html(headers.get("accept", ""))


def is_browser_script(headers: Headers) -> bool:
    """Whether a browser sent this request for a script (``fetch()``) or a subresource.

    It gets no ``WWW-Authenticate``: on a ``Basic`` challenge the browser holds the
    script's request and asks the person for a password in a dialog of its own (where it
    sends no fetch metadata, plain ``http`` to another host, it does so still).
    """
    mode = headers.get("sec-fetch-mode")
    return mode is not None and mode != "navigate"


def _prefers_html(accept: str) -> bool:
    """``text/html`` is named with a higher quality than JSON gets (ties go to JSON)."""
    qualities: dict[str, float] = {}
    for item in accept.split(","):
        media_range, *params = item.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
                if not 0.0 <= quality <= 1.0:  # also NaN
                    quality = 0.0
        qualities[media_range.strip().lower()] = quality
    html = max(qualities.get(media, 0.0) for media in _HTML_TYPES)
    json = next((qualities[media] for media in _JSON_RANGES if media in qualities), 0.0)
    return html > json


def sign_in_redirect(auth: AdminAuth, return_path: str) -> Response:
    """303 to the sign-in page, carrying where to come back to."""
    assert auth.sign_in_url is not None
    separator = "&" if "?" in auth.sign_in_url else "?"
    query = urlencode({auth.next_param: return_path})
    return RedirectResponse(auth.sign_in_url + separator + query, 303)


# --- the pages -------------------------------------------------------------------------------

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;"
    "padding:0 1rem;color:#1f2328}h1{font-size:1.4rem}"
)
# Static text and one inline style, allowed by its hash: nothing else may run or load.
PAGE_CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGES = {
    401: ("Sign in to use the audit log", "You are not signed in."),
    403: ("You may not use the audit log", "You are signed in, but without access to it."),
}


def denied_page(status_code: int, home_url: str, headers: Mapping[str, str]) -> Response:
    """The small HTML page a browser gets for a 401 or 403 (with ``headers``)."""
    title, text = _PAGES[status_code]
    body = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n<p>{text}</p>\n"
        f'<p><a href="{escape(home_url)}">Go to the home page</a></p>\n</body>\n</html>\n'
    )
    return HTMLResponse(body, status_code, headers={**headers, "content-security-policy": PAGE_CSP})
