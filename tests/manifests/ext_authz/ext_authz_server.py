"""An external authorization server for the lab, with the logic of Istio's sample
(samples/extauthz): Envoy's `envoy.service.auth.v3.Authorization` over gRPC, from the
generated code grpc publishes (the `xds-protos` package), and Envoy's raw HTTP check.

- A request with `x-ext-authz: allow` is allowed: gRPC adds `x-ext-authz-check-result:
  allowed` to the upstream request, HTTP answers 200 with that header.
- Anything else is denied with 403, `x-ext-authz-check-result: denied` and a body.
- A check without an HTTP request (a TCP connection, Envoy's network filter) is allowed when
  the source principal is one of --allow-principal.

Every check is printed as one JSON line (kind, path, principal, allowed, body size), for
the tests.
"""

import argparse
import http.server
import json
import sys
import threading
from concurrent import futures

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

CHECK_HEADER = "x-ext-authz"
ALLOWED_VALUE = "allow"
RESULT_HEADER = "x-ext-authz-check-result"
DENIED_BODY = "denied by ext_authz for not found header `x-ext-authz: allow` in the request"

PRINT_LOCK = threading.Lock()


def report(kind, path, principal, allowed, body=0):
    with PRINT_LOCK:
        print(
            json.dumps(
                {
                    "kind": kind,
                    "path": path,
                    "principal": principal,
                    "allowed": allowed,
                    "body": body,
                }
            ),
            flush=True,
        )


def header(key, value):
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


class Authorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, principals):
        self.principals = principals

    def Check(self, request, context):
        attributes = request.attributes
        principal = attributes.source.principal
        if not attributes.HasField("request"):
            allowed = principal in self.principals
            report("tcp", "", principal, allowed)
            code = code_pb2.OK if allowed else code_pb2.PERMISSION_DENIED
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code))
        http_request = attributes.request.http
        allowed = http_request.headers.get(CHECK_HEADER) == ALLOWED_VALUE
        body = len(http_request.body.encode()) or len(http_request.raw_body)
        report("grpc", http_request.path, principal, allowed, body)
        if allowed:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(
                    headers=[header(RESULT_HEADER, "allowed")]
                ),
            )
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
                headers=[header(RESULT_HEADER, "denied")],
                body=DENIED_BODY,
            ),
        )


class HttpCheck(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def check(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        allowed = self.headers.get(CHECK_HEADER) == ALLOWED_VALUE
        report("http", self.path, "", allowed)
        body = b"" if allowed else DENIED_BODY.encode()
        self.send_response(200 if allowed else 403)
        self.send_header(RESULT_HEADER, "allowed" if allowed else "denied")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = check

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc-port", type=int, default=9000)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--allow-principal", action="append", default=[])
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        Authorization(set(args.allow_principal)), server
    )
    server.add_insecure_port(f"0.0.0.0:{args.grpc_port}")
    server.start()

    http_server = http.server.ThreadingHTTPServer(("0.0.0.0", args.http_port), HttpCheck)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    print(f"ext-authz serving gRPC on {args.grpc_port}, HTTP on {args.http_port}", file=sys.stderr)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
