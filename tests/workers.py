"""Which gunicorn worker serves a connection: read off /proc (Linux), outside the service."""
import os
import time


def worker_pids(master_pid, count=None, timeout=20):
    """The pids of a gunicorn master's workers (waiting until `count` of them run)."""
    deadline = time.monotonic() + timeout
    while True:
        path = f"/proc/{master_pid}/task/{master_pid}/children"
        with open(path) as children:
            pids = sorted(int(pid) for pid in children.read().split())
        if (count is None and pids) or len(pids) == count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def _server_inodes(client_port):
    """Inodes of the server ends of TCP connections from a local client port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                rows = lines.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == client_port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    return inodes


def serving_pid(client_socket, pids, timeout=5):
    """The pid among `pids` that holds the server end of a connected client socket
    (once it has accepted it), or None."""
    port = client_socket.getsockname()[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wanted = {f"socket:[{inode}]" for inode in _server_inodes(port)}
        for pid in pids:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except FileNotFoundError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        return pid
                except OSError:
                    continue
        time.sleep(0.05)
    return None
