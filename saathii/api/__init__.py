"""HTTP blueprints, one per resource, and the request-parsing helpers they share."""
import json

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import APIError, bad_request
from ..fields import is_id


def json_body(schema):
    """Load and validate the request's JSON object body with a marshmallow schema."""
    raw = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and len(raw) >= limit:
        # A chunked body is cut at the limit rather than refused: refuse it here.
        raise RequestEntityTooLarge()
    if not raw:
        raise bad_request("Request body is required")
    if not request.is_json:
        raise APIError(415, "Content-Type must be application/json")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request("Malformed JSON body") from None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object")
    return schema.load(data)


def query_args(schema):
    """Load and validate the query string with a marshmallow schema."""
    return schema.load(request.args.to_dict(flat=True))


def path_id(value, name):
    """Validate an id taken from the URL path."""
    if not is_id(value):
        raise bad_request(f"{name} must be a positive integer", {name: ["Not a valid id."]})
    return int(value)
