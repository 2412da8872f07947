"""A WebSocket echo server and client for the lab, on Python's `websockets` (sync API).

- `serve [--host H] --port P`: on each connection first sends one JSON text message describing the
  upgrade request it received (`path`, `headers`, lower-cased names), then echoes every
  message back as it came.
- `call URL --count N [--pause-after K --pause S]`: opens a WebSocket to URL, reads the
  server's description, sends N text messages (pausing S seconds after the K-th), reads
  each echo, and prints one JSON line: `status` 101 with `request` (the description),
  `echoed` (how many echoes matched) and `mismatched`; or the HTTP status the handshake was
  refused with.
"""

import argparse
import json
import time

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import serve as ws_serve


def handler(websocket):
    request = websocket.request
    websocket.send(
        json.dumps(
            {
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.raw_items()},
            }
        )
    )
    for message in websocket:
        websocket.send(message)


def serve(args):
    with ws_serve(handler, args.host, args.port) as server:
        server.serve_forever()


def call(args):
    try:
        websocket = connect(args.url, open_timeout=10, close_timeout=5)
    except InvalidStatus as error:
        print(json.dumps({"status": error.response.status_code}), flush=True)
        return
    with websocket:
        request = json.loads(websocket.recv(timeout=10))
        echoed = 0
        mismatched = 0
        for i in range(args.count):
            if args.pause_after is not None and i == args.pause_after:
                time.sleep(args.pause)
            message = f"message {i} " + "x" * (i * 37 % 1000)
            websocket.send(message)
            if websocket.recv(timeout=10) == message:
                echoed += 1
            else:
                mismatched += 1
        print(
            json.dumps(
                {"status": 101, "request": request, "echoed": echoed, "mismatched": mismatched}
            ),
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, required=True)
    c = commands.add_parser("call")
    c.add_argument("url")
    c.add_argument("--count", type=int, default=100)
    c.add_argument("--pause-after", type=int)
    c.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    {"serve": serve, "call": call}[args.command](args)


if __name__ == "__main__":
    main()
