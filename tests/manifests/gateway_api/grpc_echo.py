"""A gRPC server and client for the lab, on grpcio with its generic handlers: no generated
code, messages are raw bytes.

- `serve --port P --version V`: answers every unary method with `V <method>`.
- `call TARGET METHOD…`: calls each method once (the request's message is `hello`) and
  prints one JSON line per call: the method and the reply, or the gRPC status code.
"""

import argparse
import json
from concurrent import futures

import grpc


class AnyMethod(grpc.GenericRpcHandler):
    def __init__(self, version):
        self.version = version

    def service(self, details):
        method = details.method

        def answer(request, context):
            return f"{self.version} {method}".encode()

        return grpc.unary_unary_rpc_method_handler(answer)


def serve(args):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((AnyMethod(args.version),))
    server.add_insecure_port(f"0.0.0.0:{args.port}")
    server.start()
    server.wait_for_termination()


def call(args):
    with grpc.insecure_channel(args.target) as channel:
        for method in args.methods:
            rpc = channel.unary_unary(method)
            try:
                reply = rpc(b"hello", timeout=10)
                line = {"method": method, "reply": reply.decode()}
            except grpc.RpcError as error:
                line = {"method": method, "code": error.code().name, "details": error.details()}
            print(json.dumps(line), flush=True)


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve")
    serving.add_argument("--port", type=int, required=True)
    serving.add_argument("--version", required=True)
    calling = commands.add_parser("call")
    calling.add_argument("target")
    calling.add_argument("methods", nargs="+")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
    else:
        call(args)


if __name__ == "__main__":
    main()
