"""Logging: the service's level, and no access token in any access log line."""
import logging
import re

TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"']+")


def redact(text):
    """Replace the value of every token= query parameter."""
    return TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Removes ?token= values from log records (the dev server logs whole request lines)."""

    def filter(self, record):
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def configure_logging(level):
    """Set the level and install the redaction filter once."""
    logging.basicConfig(level=level)
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactTokens) for f in werkzeug.filters):
        werkzeug.addFilter(RedactTokens())
