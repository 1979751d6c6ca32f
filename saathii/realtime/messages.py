"""What a feed client may send: ping, subscribe and unsubscribe."""
import json

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from ..errors import validation_error
from ..fields import user_id_field

MAX_SUBSCRIBED = 500


class ClientMessageSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True,
                         validate=validate.OneOf(["ping", "subscribe", "unsubscribe"]))
    data = fields.Raw()
    timestamp = fields.Raw()
    user_ids = fields.List(user_id_field(), validate=validate.Length(
        max=MAX_SUBSCRIBED, error="At most {max} user ids"))
    subscription = fields.String(validate=validate.OneOf(["feed"]))

    @validates_schema
    def what_to_subscribe(self, data, **kwargs):
        if data["type"] == "subscribe" and ("user_ids" in data) == ("subscription" in data):
            raise ValidationError("subscribe takes either user_ids or subscription")
        if data["type"] == "ping" and ({"user_ids", "subscription"} & set(data)):
            raise ValidationError("ping takes no user_ids or subscription")


client_message_schema = ClientMessageSchema()


def parse(raw):
    """Return a valid client message, or raise ValueError with the reason."""
    if isinstance(raw, bytes):
        raise ValueError("messages must be JSON text")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # a deeply nested message is refused too
        raise ValueError("message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("message must be a JSON object")
    try:
        return client_message_schema.load(data)
    except ValidationError as err:
        raise ValueError(validation_error(err).detail) from None
