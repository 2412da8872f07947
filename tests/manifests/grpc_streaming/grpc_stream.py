"""A gRPC streaming server and client for the lab, on Python's `grpcio` with generic
handlers and raw bytes (no generated stubs). Service `weft.Echo`:

- `Chat` (bidirectional): answers each message as it arrives with `<version>:<message>`.
- `Watch` (server streaming): the request is a count N; answers N messages
  `<version>:tick <i>`.
- `Collect` (client streaming): answers `<version>:<messages> <bytes>` once the client has
  half-closed.

`serve --port P --version V` runs it. `chat TARGET --count N [--pause S] [--header k=v]`
opens a Chat and sends message i only once the reply to message i-1 has arrived (pausing
S seconds between), so both directions stay open and interleave; with `--size B` each
message carries B more bytes (reported without them, checked whole), and `--pipelined`
sends them all without waiting, so both directions are full at once; `watch TARGET --count N`
and `collect TARGET --count N` run the other two. Each prints one JSON line: `code` (the
gRPC status, 0 is OK), `details`, `replies` (in the order received).
"""

import argparse
import json
import os
import queue
import time
from concurrent import futures

# Names resolve as the pod's libc does (/etc/hosts, the agent's DNS); no HTTP proxy.
os.environ.setdefault("GRPC_DNS_RESOLVER", "native")
import grpc  # noqa: E402

SERVICE = "weft.Echo"


def handlers(version):
    prefix = version.encode() + b":"

    def chat(requests, context):
        for message in requests:
            yield prefix + message

    def watch(request, context):
        for i in range(int(request)):
            yield prefix + f"tick {i}".encode()

    def collect(requests, context):
        count = 0
        size = 0
        for message in requests:
            count += 1
            size += len(message)
        return prefix + f"{count} {size}".encode()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Watch": grpc.unary_stream_rpc_method_handler(watch),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
        },
    )


def serve(args):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handlers(args.version),))
    server.add_insecure_port(f"0.0.0.0:{args.port}")
    server.start()
    server.wait_for_termination()


def channel(target):
    return grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])


def metadata(args):
    return [tuple(h.split("=", 1)) for h in args.header]


def report(code, details, replies):
    print(json.dumps({"code": code, "details": details, "replies": replies}), flush=True)


def run(call):
    replies = []
    try:
        for reply in call():
            replies.append(reply.decode())
    except grpc.RpcError as error:
        report(error.code().value[0], error.details(), replies)
        return
    report(0, "", replies)


def chat(args):
    answered = queue.Queue()
    padding = b"x" * args.size

    def requests():
        for i in range(args.count):
            yield f"message {i}".encode() + (b" " + padding if args.size else b"")
            if args.pipelined:
                continue
            # The next message goes only once this one's reply is back: the request stream
            # stays open while replies flow.
            answered.get(timeout=10)
            time.sleep(args.pause)

    def call():
        stream = channel(args.target).stream_stream(
            f"/{SERVICE}/Chat",
        )(requests(), metadata=metadata(args), timeout=60)
        for reply in stream:
            answered.put(None)
            if args.size:
                # Reported without the padding, marked if the padding did not come back whole.
                head, _, tail = reply.rpartition(b" ")
                yield head if tail == padding else head + b" (padding damaged)"
            else:
                yield reply

    run(call)


def watch(args):
    def call():
        stream = channel(args.target).unary_stream(f"/{SERVICE}/Watch")(
            str(args.count).encode(), metadata=metadata(args), timeout=60
        )
        yield from stream

    run(call)


def collect(args):
    def call():
        messages = (f"part {i}".encode() for i in range(args.count))
        yield channel(args.target).stream_unary(f"/{SERVICE}/Collect")(
            messages, metadata=metadata(args), timeout=60
        )

    run(call)


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--version", required=True)
    for name in ("chat", "watch", "collect"):
        c = commands.add_parser(name)
        c.add_argument("target")
        c.add_argument("--count", type=int, default=100)
        c.add_argument("--pause", type=float, default=0.0)
        c.add_argument("--header", action="append", default=[])
        c.add_argument("--size", type=int, default=0)
        c.add_argument("--pipelined", action="store_true")
    args = parser.parse_args()
    {"serve": serve, "chat": chat, "watch": watch, "collect": collect}[args.command](args)


if __name__ == "__main__":
    main()
