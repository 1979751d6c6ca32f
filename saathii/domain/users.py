"""Users: the active account behind a request, and creating users, each with an offline
status row."""
from dataclasses import dataclass

import sqlalchemy as sa
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from ..extensions import db
from ..fields import StrictInteger, MAX_ID
from ..models import User, UserStatus
from ..sql import built_once, fetch_rows


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request: what the views and rules need of them."""

    id: int
    username: str
    role: str
    favorites_version: int = 0

    @property
    def is_listener(self):
        return self.role == "listener"


@built_once
def _active_statement():
    return sa.select(User.id, User.username, User.role, User.favorites_version).where(
        User.id == sa.bindparam("user"), User.is_active == sa.true())


def active_caller(user_id):
    """Return the Caller for an active user id, or None."""
    rows = fetch_rows(_active_statement(), {"user": user_id})
    return Caller(*rows[0]) if rows else None


class UserImportSchema(Schema):
    """One user in an import file."""

    class Meta:
        unknown = RAISE

    id = StrictInteger(validate=validate.Range(1, MAX_ID))
    username = fields.String(required=True, validate=validate.Length(1, 64))
    role = fields.String(required=True, validate=validate.OneOf(["listener", "customer"]))
    sex = fields.String(allow_none=True, validate=validate.OneOf(["male", "female"]))
    bio = fields.String(allow_none=True, validate=validate.Length(max=2000))
    interests = fields.List(fields.String(validate=validate.Length(max=64)),
                            validate=validate.Length(max=50))
    profile_image_url = fields.String(allow_none=True, validate=validate.Length(max=2048))
    preferred_language = fields.String(allow_none=True, validate=validate.Length(max=32))
    rating = fields.Float(allow_none=True, validate=validate.Range(0, 5))
    country = fields.String(allow_none=True, validate=validate.Length(max=64))
    is_active = fields.Boolean()


class UserImportListSchema(Schema):
    users = fields.List(fields.Nested(UserImportSchema), required=True)

    @validates_schema
    def unique_in_file(self, data, **kwargs):
        seen_names, seen_ids = set(), set()
        for index, user in enumerate(data["users"]):
            if user["username"] in seen_names:
                raise ValidationError(f"duplicate username {user['username']!r}", str(index))
            if user.get("id") in seen_ids:
                raise ValidationError(f"duplicate id {user['id']}", str(index))
            seen_names.add(user["username"])
            if "id" in user:
                seen_ids.add(user["id"])


user_import_list_schema = UserImportListSchema()


def create_user(**profile):
    """Add a user and their offline status row to the session."""
    user = User(**profile)
    user.status = UserStatus(is_online=False, is_busy=False)
    db.session.add(user)
    return user


def import_users(records):
    """Validate and add users; raise ValueError naming the problem, adding nothing."""
    try:
        records = user_import_list_schema.load({"users": records})["users"]
    except ValidationError as err:
        raise ValueError(f"invalid users: {err.messages}") from None
    names = [record["username"] for record in records]
    taken = db.session.scalars(sa.select(User.username).where(User.username.in_(names))).all()
    if taken:
        raise ValueError(f"usernames already exist: {', '.join(sorted(taken))}")
    ids = [record["id"] for record in records if "id" in record]
    used = db.session.scalars(sa.select(User.id).where(User.id.in_(ids))).all() if ids else []
    if used:
        raise ValueError(f"ids already exist: {', '.join(map(str, sorted(used)))}")
    users = [create_user(**record) for record in records]
    db.session.flush()
    sync_id_sequence()
    return users


def sync_id_sequence():
    """After inserting explicit ids on PostgreSQL, move the id sequence past them."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), "
            "(SELECT COALESCE(MAX(id), 0) + 1 FROM users), false)"))
