"""The OpenAPI 3 document, generated from the marshmallow schemas."""
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import schemas as s
from .fields import MAX_ID

JSON = "application/json"


def _body(schema):
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _ok(schema, description="OK", headers=None):
    response = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*codes):
    text = {
        400: "Invalid input", 401: "Missing, invalid or expired token",
        404: "Not found", 409: "Not possible in the current state (wait_time while not "
                                  "busy, or a status changed concurrently)",
        413: "Body over 16 KiB", 415: "Body is not JSON", 429: "Rate limit exceeded",
        503: "Database unavailable",
    }
    # Any request can be malformed (400), unauthenticated (401) or meet an outage (503).
    return {str(code): {"description": text[code], "content": {JSON: {"schema": "Error"}}}
            for code in sorted({*codes, 400, 401, 503})}


def _id_param(name, description):
    return {"in": "path", "name": name, "required": True, "description": description,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}


BODY_ERRORS = (400, 413, 415)
LINK = {"Link": {"description": "RFC 8288 links: next, prev (and first, last in page mode)",
                 "schema": {"type": "string"}}}

OPERATIONS = {
    "/favorites/add": {"post": {
        "tags": ["favorites"], "summary": "Add a listener to my favorites",
        "requestBody": _body(s.FavoriteRequestSchema),
        "responses": {"200": _ok(s.FavoriteActionSchema),
                      **_errors(*BODY_ERRORS, 404, 429)}}},
    "/favorites/remove": {"delete": {
        "tags": ["favorites"], "summary": "Remove a listener from my favorites",
        "requestBody": _body(s.FavoriteRequestSchema),
        "responses": {"200": _ok(s.FavoriteActionSchema),
                      **_errors(*BODY_ERRORS, 404, 429)}}},
    "/favorites/check/{listener_id}": {"get": {
        "tags": ["favorites"], "summary": "Is this listener in my favorites?",
        "parameters": [_id_param("listener_id", "The listener's user id")],
        "responses": {"200": _ok(s.FavoriteActionSchema), **_errors(400, 404, 429)}}},
    "/favorites": {"get": {
        "tags": ["favorites"],
        "summary": "My favorites, newest first, by page (page, per_page) or by cursor "
                   "(limit, max_id, since_id, min_id)",
        "description": "With any cursor parameter (limit, max_id, since_id, min_id) the "
                       "list is paged by cursor and page/per_page are ignored; min_id "
                       "wins over since_id.",
        "parameters": [{"in": "query", "schema": s.FavoritesQuerySchema}],
        "responses": {"200": _ok(s.FavoritesPageSchema, headers=LINK), **_errors(400)}}},
    "/both/status/me": {
        "get": {"tags": ["presence"], "summary": "My status",
                "responses": {"200": _ok(s.StatusSchema), **_errors()}},
        "put": {"tags": ["presence"], "summary": "Update my status",
                "requestBody": _body(s.StatusUpdateSchema),
                "responses": {"200": _ok(s.StatusSchema), **_errors(*BODY_ERRORS, 409)}}},
    "/both/status/heartbeat": {"post": {
        "tags": ["presence"], "summary": "Heartbeat: I am online",
        "responses": {"200": _ok(s.MessageSchema), **_errors(429)}}},
    "/users/me/status": {
        "get": {"tags": ["presence"], "summary": "My status (client alias)",
                "responses": {"200": _ok(s.StatusSchema), **_errors()}},
        "put": {"tags": ["presence"], "summary": "Update my status (client alias)",
                "requestBody": _body(s.StatusUpdateSchema),
                "responses": {"200": _ok(s.StatusSchema), **_errors(*BODY_ERRORS, 409)}}},
    "/users/me/heartbeat": {"post": {
        "tags": ["presence"], "summary": "Heartbeat (client alias)",
        "responses": {"200": _ok(s.MessageSchema), **_errors(429)}}},
    "/users/{user_id}/presence": {"get": {
        "tags": ["presence"], "summary": "One user's presence",
        "parameters": [_id_param("user_id", "The user's id")],
        "responses": {"200": _ok(s.PresenceSchema), **_errors(404, 429)}}},
    "/users/presence": {"get": {
        "tags": ["presence"], "summary": "Presence of up to 100 users, ordered by user id",
        "parameters": [{"in": "query", "schema": s.UserIdsQuerySchema}],
        "responses": {"200": _ok(s.PresenceSchema(many=True)), **_errors(429)}}},
}

DESCRIPTION = """Favorites and presence for the Saathii voice-calling app.

Every endpoint takes `Authorization: Bearer <access_token>`. Errors are JSON:
`{"detail": "..."}`, and validation errors add `errors`, naming each field."""


def build_spec():
    """Return the OpenAPI document as a dict."""
    spec = APISpec(
        title="Saathii presence and favorites API", version="1.0.0",
        openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
        security=[{"bearerAuth": []}],
    )
    spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=s.ErrorSchema)
    for path, operations in OPERATIONS.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    update = document["components"]["schemas"]["StatusUpdate"]
    # An update must change something, and must not contradict itself.
    update["minProperties"] = 1
    update["not"] = {"anyOf": [
        {"required": ["is_online", "is_busy"],
         "properties": {"is_online": {"enum": [False]}, "is_busy": {"enum": [True]}}},
        {"required": ["is_busy", "wait_time"],
         "properties": {"is_busy": {"enum": [False]}, "wait_time": {"type": "integer"}}},
        {"required": ["is_online", "wait_time"],
         "properties": {"is_online": {"enum": [False]}, "wait_time": {"type": "integer"}}},
    ]}
    return document
