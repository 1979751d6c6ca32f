"""marshmallow schemas: every request body and query string, and every response body."""
from marshmallow import RAISE, Schema, fields, post_load, validate

from .fields import (
    QueryBoolean, QueryInteger, StrictBoolean, StrictInteger, UTCDateTime,
    query_id_field, user_id_field,
)

MAX_PER_PAGE = 100
MAX_WAIT_MINUTES = 24 * 60
CURSOR_PARAMS = ("limit", "max_id", "since_id", "min_id")


STATUS_VERSION = ("the status version: it grows with every change of this user's status; "
                  "of two views of a user, the higher version is the newer")


class BodySchema(Schema):
    """A JSON request body: unknown fields are an error."""

    class Meta:
        unknown = RAISE


class QuerySchema(Schema):
    """A query string: an unknown parameter is an error (it is usually a typo)."""

    class Meta:
        unknown = RAISE


# Requests

class FavoriteRequestSchema(BodySchema):
    listener_id = user_id_field(required=True, metadata={"example": 123})


class FavoritesQuerySchema(QuerySchema):
    page = QueryInteger(validate=validate.Range(
        min=1, max=10**9, error="Page must be a positive integer"))
    per_page = QueryInteger(validate=validate.Range(
        1, MAX_PER_PAGE, error=f"Per page must be between 1 and {MAX_PER_PAGE}"))
    online_only = QueryBoolean(load_default=False)
    available_only = QueryBoolean(load_default=False)
    limit = QueryInteger(validate=validate.Range(1, MAX_PER_PAGE))
    max_id = query_id_field(metadata={"description": "Only favorites older than this id."})
    since_id = query_id_field(min_value=0, metadata={"description": "Newest favorites newer than this id."})
    min_id = query_id_field(
        min_value=0, metadata={"description": "Favorites immediately newer than this id."}
    )

    @post_load
    def one_mode(self, data, **kwargs):
        """Cursor parameters win over page numbers, and min_id over since_id (as Mastodon)."""
        if any(name in data for name in CURSOR_PARAMS):
            data.pop("page", None)
            data.pop("per_page", None)
        if "min_id" in data:
            data.pop("since_id", None)
        return data


class StatusUpdateSchema(BodySchema):
    # What presence.check_update refuses, for the OpenAPI document: an update must change
    # something, and must not contradict itself.
    OPENAPI_RULES = {"minProperties": 1, "not": {"anyOf": [
        {"required": ["is_online", "is_busy"],
         "properties": {"is_online": {"enum": [False]}, "is_busy": {"enum": [True]}}},
        {"required": ["is_busy", "wait_time"],
         "properties": {"is_busy": {"enum": [False]}, "wait_time": {"type": "integer"}}},
        {"required": ["is_online", "wait_time"],
         "properties": {"is_online": {"enum": [False]}, "wait_time": {"type": "integer"}}},
    ]}}

    is_online = StrictBoolean()
    is_busy = StrictBoolean()
    wait_time = StrictInteger(
        allow_none=True, validate=validate.Range(0, MAX_WAIT_MINUTES),
        metadata={"description": "Minutes until free, while busy."},
    )


class UserIdsQuerySchema(QuerySchema):
    user_ids = fields.String(required=True, metadata={
        "description": "Comma-separated user ids (at most 100)", "example": "123,456,789",
        "pattern": r"^[1-9][0-9]{0,17}(,[1-9][0-9]{0,17}){0,99}$"})


# Responses

class ErrorSchema(Schema):
    detail = fields.String(required=True)
    errors = fields.Dict()


class MessageSchema(Schema):
    message = fields.String(required=True)


class FavoriteActionSchema(Schema):
    success = fields.Boolean(required=True)
    message = fields.String(required=True)
    listener_id = fields.Integer(required=True)
    is_favorited = fields.Boolean(required=True)


class FavoriteItemSchema(Schema):
    favorite_id = fields.Integer(required=True)
    user_id = fields.Integer(required=True)
    username = fields.String(required=True)
    sex = fields.String(required=True, allow_none=True,
                        validate=validate.OneOf(["male", "female"]))
    bio = fields.String(required=True, allow_none=True)
    interests = fields.List(fields.String(), required=True)
    profile_image_url = fields.String(required=True, allow_none=True)
    preferred_language = fields.String(required=True, allow_none=True)
    rating = fields.Float(required=True, allow_none=True)
    country = fields.String(required=True, allow_none=True)
    is_online = fields.Boolean(required=True)
    last_seen = UTCDateTime(required=True, allow_none=True)
    is_busy = fields.Boolean(required=True)
    wait_time = fields.Integer(required=True, allow_none=True)
    is_available = fields.Boolean(required=True)
    favorited_at = UTCDateTime(required=True)
    version = fields.Integer(required=True, metadata={"description": STATUS_VERSION})


class FavoritesPageSchema(Schema):
    favorites = fields.List(fields.Nested(FavoriteItemSchema), required=True)
    total_count = fields.Integer(required=True)
    online_count = fields.Integer(required=True)
    available_count = fields.Integer(required=True)
    page = fields.Integer(required=True, allow_none=True,
                          metadata={"description": "null in cursor mode, past the head"})
    per_page = fields.Integer(required=True)
    has_next = fields.Boolean(required=True)
    has_previous = fields.Boolean(required=True)


class StatusSchema(Schema):
    user_id = fields.Integer(required=True)
    is_online = fields.Boolean(required=True)
    is_busy = fields.Boolean(required=True)
    wait_time = fields.Integer(required=True, allow_none=True)
    last_seen = UTCDateTime(required=True, allow_none=True)
    created_at = UTCDateTime(required=True)
    updated_at = UTCDateTime(required=True)
    version = fields.Integer(required=True, metadata={"description": STATUS_VERSION})


class PresenceSchema(Schema):
    user_id = fields.Integer(required=True)
    username = fields.String(required=True)
    is_online = fields.Boolean(required=True)
    is_busy = fields.Boolean(required=True)
    wait_time = fields.Integer(required=True, allow_none=True)
    is_available = fields.Boolean(required=True)
    last_seen = UTCDateTime(required=True, allow_none=True)
    version = fields.Integer(required=True, metadata={"description": STATUS_VERSION})


favorite_request_schema = FavoriteRequestSchema()
favorites_query_schema = FavoritesQuerySchema()
status_update_schema = StatusUpdateSchema()
user_ids_query_schema = UserIdsQuerySchema()
favorite_action_schema = FavoriteActionSchema()
status_schema = StatusSchema()
message_schema = MessageSchema()
favorites_page_schema = FavoritesPageSchema()
presence_schema = PresenceSchema()
presences_schema = PresenceSchema(many=True)
