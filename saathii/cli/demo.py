"""`flask demo`: seed demo listeners, customers and favorites; print ready curl lines."""
import os

import click
from flask import current_app
from flask.cli import with_appcontext
import sqlalchemy as sa

from .. import demo_tokens
from ..auth import create_access_token
from ..domain import beats, favorite_changes, favorites, status_updates
from ..domain.users import create_user
from ..extensions import db
from ..models import User

LISTENERS = [
    dict(username="jane_smith", sex="female", bio="Here to listen, any time.",
         interests=["music", "travel"], preferred_language="en", rating=4.8, country="IN"),
    dict(username="arjun_rao", sex="male", bio="Calm talks about work and life.",
         interests=["career", "cricket"], preferred_language="hi", rating=4.5, country="IN"),
    dict(username="meera_k", sex="female", bio="Let us talk books.",
         interests=["books", "poetry"], preferred_language="ta", rating=4.9, country="IN"),
    dict(username="sam_lee", sex="male", bio="Night owl, good listener.",
         interests=["movies"], preferred_language="en", rating=3.7, country="SG"),
]
CUSTOMERS = [dict(username="john_doe"), dict(username="priya_s")]


def _user(profile, role):
    user = db.session.scalar(sa.select(User).where(User.username == profile["username"]))
    return user or create_user(role=role, **profile)


def seed():
    """Create the demo users (once) and return (listeners, customers)."""
    listeners = [_user(profile, "listener") for profile in LISTENERS]
    customers = [_user(profile, "customer") for profile in CUSTOMERS]
    db.session.commit()
    # Through the service's own writers, as its requests change them.
    for customer, listener in [(customers[0], listener) for listener in listeners[:3]] + [
            (customers[1], listeners[0])]:
        favorite_changes.commit(favorites.ADDED, customer.id, listener.id)
    beats.beat(listeners[0].id)
    status_updates.commit(listeners[1].id, {"is_busy": True, "wait_time": 10})
    return listeners, customers


@click.command("demo")
@click.option("--base-url", default=lambda: f"http://127.0.0.1:{os.environ.get('PORT', 5000)}",
              help="Where the server answers, for the printed curl lines.")
@click.option("--expires-in", type=click.IntRange(60), default=7 * 24 * 3600,
              help="Token lifetime in seconds.")
@with_appcontext
def demo(base_url, expires_in):
    """Seed demo users and favorites, and print tokens and curl lines to try."""
    listeners, customers = seed()
    customer, listener = customers[0], listeners[3]
    tokens = {user.id: create_access_token(user.id, expires_in) for user in customers + listeners}
    demo_tokens.save([dict(id=user.id, username=user.username, role=user.role,
                           token=tokens[user.id]) for user in customers + listeners])
    click.echo("Demo users (id, username, role):")
    for user in customers + listeners:
        click.echo(f"  {user.id:>3}  {user.username:<11} {user.role}")
    if current_app.config["CONSOLE_ENABLED"]:
        click.echo(f"\nLive console: {base_url}/console  (pick a demo user; "
                   "a second window can be another one)")
    click.echo("\nPaste these two lines into your shell for their tokens:")
    click.echo(f"  export CUSTOMER={tokens[customer.id]}  # {customer.username}, id {customer.id}")
    click.echo(f"  export LISTENER={tokens[listener.id]}  # {listener.username}, id {listener.id}")
    click.echo("(a token for any user: flask --app wsgi users token USER_ID)")
    as_customer, as_listener = '-H "Authorization: Bearer $CUSTOMER"', \
        '-H "Authorization: Bearer $LISTENER"'
    body = f"-H 'Content-Type: application/json' -d '{{\"listener_id\": {listener.id}}}'"
    ids = ",".join(str(user.id) for user in listeners)
    click.echo(f"\nThen, as {customer.username} (a customer):")
    for line in (
        f"curl -s {as_customer} '{base_url}/favorites?page=1&per_page=20'",
        f"curl -s -X POST {as_customer} {body} {base_url}/favorites/add",
        f"curl -s {as_customer} {base_url}/favorites/check/{listener.id}",
        f"curl -s -X DELETE {as_customer} {body} {base_url}/favorites/remove",
        f"curl -s {as_customer} '{base_url}/users/presence?user_ids={ids}'",
    ):
        click.echo("  " + line)
    click.echo(f"\nAs {listener.username} (a listener):")
    for line in (
        f"curl -s -X POST {as_listener} {base_url}/both/status/heartbeat",
        f"curl -s -X PUT {as_listener} -H 'Content-Type: application/json' "
        f"-d '{{\"is_busy\": true, \"wait_time\": 5}}' {base_url}/both/status/me",
        f"curl -s {as_listener} {base_url}/both/status/me",
    ):
        click.echo("  " + line)
    click.echo(f"\nAPI reference: {base_url}/docs")
