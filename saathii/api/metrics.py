"""GET /metrics: the service's Prometheus metrics (METRICS_ENABLED), behind
`Authorization: Bearer <METRICS_TOKEN>` when METRICS_TOKEN is set; in production without
one, 403 (per-route counts and socket numbers are not for anyone who asks)."""
import hmac

from flask import Blueprint, Response, current_app, request

from ..auth import bearer_token
from ..errors import forbidden, unauthorized
from ..metrics import exposition

bp = Blueprint("metrics", __name__)
METRICS_NEED_A_TOKEN = "Metrics are not public in production: set METRICS_TOKEN and scrape with it"


@bp.get("/metrics")
def metrics():
    """Every metric, summed over the workers, in Prometheus's text format."""
    expected = current_app.config.get("METRICS_TOKEN")
    if not expected and current_app.config["SAATHII_ENV"] == "production":
        raise forbidden(METRICS_NEED_A_TOKEN)
    if expected:
        sent = (bearer_token() or "").encode()
        if not hmac.compare_digest(sent, expected.encode()):
            raise unauthorized()
    body, content_type = exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
