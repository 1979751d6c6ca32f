"""A minimal WebSocket client for the bench: one socket, no thread of its own.

simple-websocket's client runs a reader thread (a greenlet) per socket and wsproto's
parser per frame; opening thousands of sockets from one Python process that way costs
more CPU than the server spends accepting them. This client sends the upgrade request,
reads the 101, and parses the server's (unmasked) frames itself; it answers pings and
masks what it sends, as RFC 6455 asks of a client.
"""
import base64
import os
import socket
import struct

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class Closed(Exception):
    """The server closed the socket (code None: no close frame, the connection ended)."""

    def __init__(self, code, reason=""):
        super().__init__(f"closed with {code} {reason}".strip())
        self.code = code
        self.reason = reason


class Rejected(Exception):
    """The server answered the upgrade with an HTTP status other than 101."""


class WebSocket:
    """One client socket: connect(), then receive() text messages."""

    def __init__(self, sock, buffered=b""):
        self.sock = sock
        self.buffer = bytearray(buffered)

    @classmethod
    def connect(cls, port, path, timeout=30):
        """Open a socket to 127.0.0.1:port and upgrade it; raise Rejected or OSError."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                         .encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed by the server during the handshake")
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            if status != b"101":
                raise Rejected(f"handshake answered HTTP {status.decode()}")
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    def _fill(self, size):
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(None, "connection ended")
            self.buffer += chunk

    def _frame(self):
        self._fill(2)
        first, second = self.buffer[0], self.buffer[1]
        length, offset = second & 0x7F, 2
        if length == 126:
            self._fill(4)
            length, offset = struct.unpack_from("!H", self.buffer, 2)[0], 4
        elif length == 127:
            self._fill(10)
            length, offset = struct.unpack_from("!Q", self.buffer, 2)[0], 10
        self._fill(offset + length)
        payload = bytes(self.buffer[offset:offset + length])
        del self.buffer[:offset + length]
        return first & 0x0F, payload

    def receive(self):
        """The next text message (str); answers pings; raises Closed at the end."""
        while True:
            opcode, payload = self._frame()
            if opcode == TEXT:
                return payload.decode()
            if opcode == PING:
                self.send_frame(PONG, payload)
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                try:
                    self.send_frame(CLOSE, payload[:2])
                except OSError:
                    pass
                self.close()
                raise Closed(code, payload[2:].decode(errors="replace"))

    def send_frame(self, opcode, payload=b""):
        """Send one masked frame (payloads under 126 bytes: all this bench sends)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def send_text(self, text):
        """Send a short text message."""
        self.send_frame(TEXT, text.encode())

    def close(self):
        """Close the TCP connection (after a close frame when still open)."""
        try:
            self.sock.close()
        except OSError:
            pass
