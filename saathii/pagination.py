"""RFC 8288 Link headers for paged and cursor-paged lists."""
from math import ceil
from urllib.parse import urlencode

from flask import current_app, request, url_for

# What Werkzeug leaves unquoted in a query string, so links read as url_for writes them.
QUERY_SAFE = "!$'()*,/:;?@"


def _header(links):
    # One url_for for the endpoint; each link only adds its own query string. Absolute
    # from PUBLIC_BASE_URL, else a path (RFC 8288: resolved against the request's URL):
    # never from the request's Host header, which a client chooses.
    endpoint = current_app.config["PUBLIC_BASE_URL"].rstrip("/") + url_for(request.endpoint)
    return ", ".join(
        f'<{endpoint}?{urlencode(_present(params), safe=QUERY_SAFE)}>; rel="{rel}"'
        for rel, params in links.items())


def _present(params):
    return [(name, value) for name, value in params.items() if value is not None]


def page_links(base, page, per_page, total, has_next):
    """Link header for page/per_page mode: first, prev, next and last pages."""
    last = max(1, ceil(total / per_page))
    links = {"first": {**base, "page": 1, "per_page": per_page}}
    if page > 1:
        links["prev"] = {**base, "page": min(page - 1, last), "per_page": per_page}
    if has_next:
        links["next"] = {**base, "page": page + 1, "per_page": per_page}
    links["last"] = {**base, "page": last, "per_page": per_page}
    return _header(links)


def cursor_links(base, limit, items, has_next, args):
    """Link header for cursor mode: next (older, when there may be more) and prev (newer)."""
    links = {}
    if items:
        if has_next:
            links["next"] = {**base, "limit": limit, "max_id": items[-1]["favorite_id"]}
        links["prev"] = {**base, "limit": limit, "min_id": items[0]["favorite_id"]}
    else:
        # Nothing here: "prev" asks for whatever arrives above this empty window.
        lower = args.get("min_id") or args.get("since_id")
        if lower is None:
            lower = args["max_id"] - 1 if args.get("max_id") else 0
        links["prev"] = {**base, "limit": limit, "min_id": lower}
    return _header(links)
