"""A TCP proxy the tests control, between the service and PostgreSQL or Redis: it can
hold every byte in both directions (a stalled network or server), or cut every
connection and refuse new ones (a server that is down), and then heal. The shared
servers themselves are never stopped."""
import select
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; pause(), cut() and heal() change that."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.state = "forwarding"  # or "paused" (hold everything) or "cut" (refuse)
        self.changed = threading.Condition()
        self.connections = []
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self):
        """Hold every byte, both ways, on open and new connections."""
        self._set("paused")

    def cut(self):
        """Close every connection and refuse new ones."""
        self._set("cut")
        for pair in list(self.connections):
            for sock in pair:
                _close(sock)

    def heal(self):
        """Forward again."""
        self._set("forwarding")

    def close(self):
        self.closing = True
        self.cut()
        _close(self.listener)

    def _set(self, state):
        with self.changed:
            self.state = state
            self.changed.notify_all()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.state == "cut":
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            self.connections.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source, sink):
        poller = select.poll()  # select.select refuses descriptors past 1023
        poller.register(source, select.POLLIN)
        try:
            while True:
                with self.changed:
                    while self.state == "paused":
                        self.changed.wait()
                    if self.state == "cut":
                        return
                if not poller.poll(50):
                    continue
                data = source.recv(65536)
                if not data or self.state == "cut":
                    return
                if self.state == "paused":  # arrived as it paused: held until it heals
                    with self.changed:
                        while self.state == "paused":
                            self.changed.wait()
                    if self.state == "cut":
                        return
                sink.sendall(data)
        except (OSError, ValueError):  # closed by cut() meanwhile
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
