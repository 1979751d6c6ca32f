"""The live console: a page for trying the API and watching the feed in a browser."""
from flask import Blueprint, render_template, request

from .. import demo_tokens
from .pages import page_headers

bp = Blueprint("console", __name__, static_folder="../static/console",
               static_url_path="/console/static")


@bp.get("/console")
def console():
    """The console page; outside production it lists the demo users to sign in as."""
    page = render_template("console.html", demo_users=demo_tokens.load())
    host = request.host  # checked by check_host before any view runs
    # Only our own script, styles and API (REST and the feed socket on this host).
    return page, 200, page_headers(connect_src=f"'self' ws://{host} wss://{host}")
