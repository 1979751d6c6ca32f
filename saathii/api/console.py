"""The live console: a page for trying the API and watching the feed in a browser."""
from flask import Blueprint, render_template, request

from .. import demo_tokens

bp = Blueprint("console", __name__, static_folder="../static/console",
               static_url_path="/console/static")


def content_security_policy():
    """Only our own script, styles and API (REST and the feed socket on this host)."""
    host = request.host  # checked by check_host before any view runs
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
        f"connect-src 'self' ws://{host} wss://{host}", "base-uri 'none'",
        "form-action 'none'", "frame-ancestors 'none'",
    ])


@bp.get("/console")
def console():
    """The console page; outside production it lists the demo users to sign in as."""
    page = render_template("console.html", demo_users=demo_tokens.load())
    return page, 200, {
        "Content-Security-Policy": content_security_policy(),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


@bp.after_request
def no_sniffing(response):
    """The console's script and stylesheet are served as what they are."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
