"""Bearer-token authentication: HS256 access tokens minted by the Saathii auth service."""
import time
from datetime import datetime, timedelta, timezone
from functools import wraps

import jwt
from flask import current_app, g, request

from marshmallow import ValidationError

from .errors import APIError, unauthorized
from .domain.users import active_caller
from .fields import MAX_ID

ALGORITHMS = ["HS256"]


def _user_id_from(claims):
    """Return the user id a token names (sub as a string, or user_id as an int)."""
    sub = claims.get("sub")
    if isinstance(sub, str) and sub.isascii() and sub.isdigit() and sub == str(int(sub)):
        user_id = int(sub)
    elif sub is None and type(claims.get("user_id")) is int:
        user_id = claims["user_id"]
    else:
        return None
    return user_id if 0 < user_id <= MAX_ID else None


def decode_token(token, secret=None):
    """Return the claims of a valid access token, or None."""
    if not token:
        return None
    try:
        # The leeway forgives an auth service clock a little fast (iat, nbf); exp is
        # checked below without it.
        claims = jwt.decode(
            token, secret or current_app.config["JWT_SECRET"], algorithms=ALGORITHMS,
            options={"require": ["exp"]}, leeway=current_app.config["JWT_LEEWAY_SECONDS"],
        )
    except jwt.PyJWTError:
        return None
    exp = claims["exp"]
    if type(exp) not in (int, float) or exp <= time.time():  # "123" is no timestamp
        return None
    if claims.get("type", "access") != "access":
        return None
    return claims


# Valid tokens already checked, by (secret, token): (user id, expiry). A client sends the
# same token on every call, so its signature is checked once, not on every heartbeat.
_verified = {}
MAX_VERIFIED = 100_000


def verified_token(token):
    """Return (user id, expiry as a Unix time) of a valid access token, or None."""
    if not token:
        return None
    secret = current_app.config["JWT_SECRET"]
    known = _verified.get((secret, token))
    if known is not None:
        if time.time() < known[1]:
            return known
        del _verified[(secret, token)]
        return None
    claims = decode_token(token, secret)
    user_id = _user_id_from(claims) if claims else None
    if user_id is None:
        return None
    if len(_verified) >= MAX_VERIFIED:
        _verified.clear()
    known = _verified[(secret, token)] = (user_id, claims["exp"])
    return known


def user_id_for_token(token):
    """Return the user id a valid access token names, or None (the user is not checked)."""
    verified = verified_token(token)
    return verified[0] if verified is not None else None


def user_for_token(token):
    """Return the active user a token belongs to, or None."""
    user_id = user_id_for_token(token)
    return active_caller(user_id) if user_id is not None else None


def bearer_token():
    """Return the token of an `Authorization: Bearer` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


MALFORMED = (400, 415)  # a body, query or path the view could not read


def authenticate(view=None, *, account_in_query=False):
    """Decorate a view that needs a caller: a valid access token (else 401) of an active
    account (else 401), checked before the view runs (and before its rate limit, which
    counts per user: put it above the limit's decorator).

    account_in_query=True, for hot paths whose own query checks the account (joined to
    the work, no separate look-up): only the token is checked first, and a request the
    view refuses (a 4xx, a validation error) is answered 401 first if the account is gone,
    as if it had been checked."""
    if view is None:
        return lambda view: authenticate(view, account_in_query=account_in_query)

    @wraps(view)
    def authenticated(*args, **kwargs):
        user_id = user_id_for_token(bearer_token())
        if user_id is None:
            raise unauthorized()
        g.user_id = user_id
        if not account_in_query:
            current_user()
            return view(*args, **kwargs)
        try:
            return view(*args, **kwargs)
        except (APIError, ValidationError) as err:
            # A malformed request (the view's query never ran): a gone account hears 401,
            # not what was wrong with it. The domain's own refusals (404, 409...) come
            # from queries that checked the account already.
            if isinstance(err, ValidationError) or err.status in MALFORMED:
                current_user()
            raise

    # The view that answers is this wrapper itself (outermost: above any rate limit);
    # tests/test_auth.py checks that every API view is.
    authenticated.authenticates = authenticated
    return authenticated


def current_user():
    """The authenticated, active user of this request (401 if the account is gone)."""
    if "user" not in g:
        caller = active_caller(g.user_id)
        if caller is None:
            raise unauthorized()
        g.user = caller
    return g.user


def create_access_token(user_id, expires_in=3600):
    """Mint an access token the way the Saathii auth service does."""
    # Real time, not the service clock: PyJWT checks exp and iat against real time.
    now = datetime.now(timezone.utc)
    claims = {
        "sub": str(user_id),
        "type": "access",
        "iat": now,
        "exp": now + timedelta(seconds=expires_in),
    }
    return jwt.encode(claims, current_app.config["JWT_SECRET"], algorithm="HS256")
