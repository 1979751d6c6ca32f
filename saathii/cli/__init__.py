"""The service's own admin commands (flask --app wsgi ...)."""
