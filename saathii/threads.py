"""Light threads: a bare greenlet under gevent (the gunicorn worker), a real thread
otherwise (the development server, the CLI, tests)."""
import threading


class Greenlet:
    """The part of threading.Thread a socket's reader and writer use, as a bare greenlet:
    under gevent's monkey patching a patched Thread costs ten times more to start."""

    def __init__(self, target, name="greenlet"):
        self.target = target
        self.name = name
        self.greenlet = None

    def start(self):
        import gevent

        self.greenlet = gevent.spawn(self.target)

    def join(self, timeout=None):
        if self.greenlet is not None:
            self.greenlet.join(timeout)

    def is_alive(self):
        return self.greenlet is not None and not self.greenlet.dead


def light_thread(target, name="thread", daemon=True):
    """A daemon thread (simple-websocket's thread_class, batch writers): a greenlet under
    gevent (the gunicorn worker), a real thread otherwise (the development server)."""
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        return Greenlet(target, name)
    return threading.Thread(target=target, name=name, daemon=daemon)
