"""`flask users import FILE` and `flask users token USER_ID`."""
import json

import click
from flask.cli import AppGroup

from ..auth import create_access_token
from ..domain.users import import_users
from ..extensions import db
from ..models import User


@click.group(cls=AppGroup)
def users():
    """Manage users and tokens."""


@users.command("import")
@click.argument("file", type=click.File("r"))
def import_command(file):
    """Create users from a JSON array of user objects; print their ids."""
    try:
        records = json.load(file)
    except ValueError as err:
        raise click.ClickException(f"{file.name} is not valid JSON: {err}") from None
    if not isinstance(records, list):
        raise click.ClickException("the file must hold a JSON array of user objects")
    try:
        created = import_users(records)
        db.session.commit()
    except ValueError as err:
        db.session.rollback()
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps([{"id": user.id, "username": user.username} for user in created]))


@users.command("token")
@click.argument("user_id", type=click.IntRange(1))
@click.option("--expires-in", type=click.IntRange(1), default=3600, show_default=True,
              help="Lifetime in seconds.")
def token_command(user_id, expires_in):
    """Print an access token for a user."""
    if db.session.get(User, user_id) is None:
        raise click.ClickException(f"no user with id {user_id}")
    click.echo(create_access_token(user_id, expires_in))
