"""The floor: a bare Flask app that answers {} to anything, served by the same gunicorn
command and gunicorn.conf.py as the service (`gunicorn -c gunicorn.conf.py floor:app`)."""
from flask import Flask

app = Flask(__name__)
# gunicorn.conf.py's post_worker_init hands every app to saathii.scheduler, which reads
# this setting (a KeyError would kill the worker); the floor runs no scheduler.
app.config["SCHEDULER_ENABLED"] = False


@app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE"])
@app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
def empty(path):
    """Return an empty JSON object."""
    return {}
