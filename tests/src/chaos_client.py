"""The chaos tests' client (tests/src/chaos.rs): HTTP/1.1 requests to one address under
steady load, for a bounded time, one JSON line per attempt on stdout.

    python chaos_client.py HOST PORT SECONDS INTERVAL_MS TIMEOUT_MS [STOP_AFTER_OK]

Two loops run side by side, each sending a request every INTERVAL_MS:
- "new": a fresh connection per request (`Connection: close`): what new connections meet;
- "kept": requests on one keep-alive connection; after a failure the next request opens a
  new connection ("conn" counts them): what happens to connections already open.
Each line: {"kind", "t" (Unix seconds), "ok", "outcome", "ms", "conn"}; the outcome is "ok",
"refused", "reset", "closed" (the peer closed before a whole response), "timeout",
"http <status>" or "error <name>". With STOP_AFTER_OK > 0 both stop once the "new" loop has
had that many successes in a row after a failure (or at SECONDS, whichever comes first).
"""
import json
import socket
import sys
import threading
import time

LOCK = threading.Lock()
STOP = threading.Event()


def emit(kind, started, outcome, conn):
    line = {
        "kind": kind,
        "t": started,
        "ok": outcome == "ok",
        "outcome": outcome,
        "ms": round((time.time() - started) * 1000.0, 1),
        "conn": conn,
    }
    with LOCK:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def read_response(sock, buffered):
    """Reads one response; returns (status, leftover bytes). Raises EOFError when the peer
    closes first."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError()
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError()
            rest += chunk
        return status, rest[length:]
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            while b"\r\n" not in rest:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError()
                rest += chunk
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError()
                rest += chunk
            rest = rest[size + 2:]
            if size == 0:
                return status, rest
    # Neither: the body runs to the end of the connection.
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return status, b""


def classify(error):
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(error, EOFError):
        return "closed"
    if isinstance(error, socket.timeout):
        return "timeout"
    return "error " + type(error).__name__


def paced(interval, deadline):
    """Yields at fixed intervals until the deadline or a stop."""
    next_at = time.time()
    while not STOP.is_set() and time.time() < deadline:
        yield
        next_at = max(next_at + interval, time.time() - interval)
        delay = next_at - time.time()
        if delay > 0:
            STOP.wait(delay)


def new_connections(host, port, interval, timeout, deadline, stop_after_ok):
    request = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode()
    in_a_row, failed = 0, False
    for n, _ in enumerate(paced(interval, deadline)):
        started = time.time()
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                sock.sendall(request)
                status, _ = read_response(sock, b"")
            outcome = "ok" if status == 200 else "http %d" % status
        except Exception as error:  # every failure is a figure, none stops the run
            outcome = classify(error)
        emit("new", started, outcome, n)
        failed = failed or outcome != "ok"
        in_a_row = in_a_row + 1 if outcome == "ok" else 0
        if stop_after_ok and failed and in_a_row >= stop_after_ok:
            STOP.set()


def kept_connection(host, port, interval, timeout, deadline):
    request = ("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode()
    sock, buffered, conn = None, b"", 0
    for _ in paced(interval, deadline):
        started = time.time()
        try:
            if sock is None:
                conn += 1
                sock = socket.create_connection((host, port), timeout=timeout)
                sock.settimeout(timeout)
                buffered = b""
            sock.sendall(request)
            status, buffered = read_response(sock, buffered)
            outcome = "ok" if status == 200 else "http %d" % status
        except Exception as error:
            outcome = classify(error)
            if sock is not None:
                sock.close()
            sock = None
        emit("kept", started, outcome, conn)
    if sock is not None:
        sock.close()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    seconds, interval = float(sys.argv[3]), int(sys.argv[4]) / 1000.0
    timeout = int(sys.argv[5]) / 1000.0
    stop_after_ok = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    deadline = time.time() + seconds
    kept = threading.Thread(
        target=kept_connection, args=(host, port, interval, timeout, deadline), daemon=True
    )
    kept.start()
    new_connections(host, port, interval, timeout, deadline, stop_after_ok)
    STOP.set()
    kept.join(timeout + 1.0)


if __name__ == "__main__":
    main()
