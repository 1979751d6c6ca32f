"""Headers every answer carries: no MIME sniffing, no referrer, caching right for what it
is, and Strict-Transport-Security over HTTPS.

An answer to a request with a token (a header or the feed's query) is one user's data:
`Cache-Control: private, no-cache`, so a phone may keep it but must revalidate, and no
shared cache stores it. Every other answer (health, metrics, errors) is `no-store`, unless
its view chose otherwise (the API document and Swagger UI's files may be cached; the
pages set their own, with their Content-Security-Policy). HSTS_SECONDS (a year; 0: never)
is sent only on HTTPS requests, which behind a proxy needs PROXY_FIX.
"""
from flask import current_app, request


def add_headers(response):
    """after_request: the headers above, where the view set none of its own."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    private = "Authorization" in request.headers or "token" in request.args
    headers.setdefault("Cache-Control", "private, no-cache" if private else "no-store")
    seconds = current_app.config["HSTS_SECONDS"]
    if seconds and request.is_secure:
        headers.setdefault("Strict-Transport-Security", f"max-age={seconds}")
    return response


def init_app(app):
    """Give every answer these headers."""
    app.after_request(add_headers)
