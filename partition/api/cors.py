"""Cross-origin requests to serve --http (serve): which web pages' scripts may call the endpoint.

A browser lets a page's script read a reply from another origin only when the reply names that origin
(Access-Control-Allow-Origin), and asks first (an OPTIONS preflight) before a POST with a JSON body or
an Authorization header. `serve --http-allowed-origin ORIGIN` lists the origins allowed ("*": any); by
default none is, and a browser page cannot call the endpoint (clients that are no browser are not
concerned). The API key, when there is one, is still required on every request but the preflight,
which carries none.
"""

from __future__ import annotations

# What a preflight is told the endpoint takes; its answer is kept by the browser for PREFLIGHT_MAX_AGE_S.
ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"
PREFLIGHT_MAX_AGE_S = 600


class CorsPolicy:
    def __init__(self, origins: tuple[str, ...] = ()) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origin.rstrip("/") for origin in origins if origin != "*")

    @property
    def enabled(self) -> bool:
        return self.any or bool(self.origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any or origin in self.origins)

    def headers(self, origin: str | None) -> dict[str, str]:
        """Headers for any reply to a request from `origin` (its Origin header): none unless allowed."""
        if not self.allows(origin):
            return {}
        # the origin itself rather than "*", so that caches keep replies to each origin apart (Vary)
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def preflight(self, origin: str | None, method: str | None) -> dict[str, str] | None:
        """The headers a preflight's answer (204) adds to `headers(origin)`, or None when it is no
        preflight this allows."""
        if method is None or not self.allows(origin):
            return None
        return {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        }
