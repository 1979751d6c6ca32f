"""Flask-Limiter's before-request pass, taken out: the one place that reaches into an
inside of Flask-Limiter.

Every limit of this service sits on a view and is counted by its decorator, so the
pass that Limiter.init_app registers to count app-wide and blueprint limits before each
request never finds anything to count, yet costs each request a share of its time
(BENCHMARKS.md). Flask-Limiter has no setting that leaves it out (a request filter still
runs it), so remove() takes the registered method out of Flask's before-request list.
tests/test_library_insides.py fails, naming Flask-Limiter's version, if an upgrade
renames the method or stops registering it that way.
"""


def remove(app, limiter):
    """Take the limiter's before-request pass out of the app (absent when rate limits
    are off); return whether it was there."""
    hooks = app.before_request_funcs.get(None, [])
    check = limiter._check_request_limit
    if check in hooks:
        hooks.remove(check)
        return True
    return False
