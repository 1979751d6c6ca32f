"""The demo users' tokens that `flask demo` mints, kept for the console's sign-in list."""
import json
import logging
import os
from pathlib import Path

from flask import current_app

from .auth import user_for_token

log = logging.getLogger(__name__)


def save(users):
    """Write the demo users (dicts with id, username, role and token), readable by us only."""
    path = Path(current_app.config["DEMO_TOKENS_FILE"])
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # also when a stale file was there with wider rights
    with os.fdopen(descriptor, "w") as file:
        json.dump(users, file, indent=2)
    temporary.replace(path)


def load():
    """The saved demo users whose tokens still sign in here; none in production or when
    CONSOLE_DEMO_USERS is off."""
    config = current_app.config
    if config["SAATHII_ENV"] == "production" or not config["CONSOLE_DEMO_USERS"]:
        return []
    path = Path(current_app.config["DEMO_TOKENS_FILE"])
    try:
        users = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        log.warning("Ignoring the demo tokens file %s: %s", path, error)
        return []
    if not isinstance(users, list):
        return []
    return [
        {key: user[key] for key in ("id", "username", "role", "token")}
        for user in users
        if isinstance(user, dict) and {"id", "username", "role", "token"} <= user.keys()
        and isinstance(user["token"], str) and user_for_token(user["token"])
    ]
