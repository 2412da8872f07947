"""Span receivers for tests/tests/tracing.rs, built on the published definitions rather
than on weft's own encoders: an OTLP/gRPC TraceService from the official
`opentelemetry-proto` package, and a Zipkin v2 collector (`POST /api/v2/spans`) that
validates each body against Zipkin's published `zipkin2-api.yaml` (definition
`ListOfSpans`) with `jsonschema`, answering 400 to what does not conform.

Every span received is printed as one JSON line on standard output (the lab keeps it in
the pod's log): its format, service, ids, name, kind, tags, and for Zipkin whether the
body was valid (with the validator's message when not).
"""
import argparse
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import jsonschema
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOCK = threading.Lock()


def emit(line):
    with LOCK:
        print(json.dumps(line), flush=True)


def any_value(value):
    kind = value.WhichOneof("value")
    return str(getattr(value, kind)) if kind else None


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            service = next(
                (any_value(a.value) for a in resource_spans.resource.attributes if a.key == "service.name"),
                None,
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    emit({
                        "format": "otlp",
                        "service": service,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex() or None,
                        "name": span.name,
                        "kind": span.kind,
                        "tags": {a.key: any_value(a.value) for a in span.attributes},
                    })
        return trace_service_pb2.ExportTraceServiceResponse()


def zipkin_handler(schema):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            error = None
            spans = []
            if self.path != "/api/v2/spans":
                error = f"unexpected path {self.path}"
            else:
                try:
                    spans = json.loads(body)
                    jsonschema.validate(spans, schema)
                except (ValueError, jsonschema.ValidationError) as e:
                    error = str(e).splitlines()[0]
            for span in spans if isinstance(spans, list) else []:
                emit({
                    "format": "zipkin",
                    "valid": error is None,
                    "error": error,
                    "service": (span.get("localEndpoint") or {}).get("serviceName"),
                    "trace_id": span.get("traceId"),
                    "span_id": span.get("id"),
                    "parent_id": span.get("parentId"),
                    "name": span.get("name"),
                    "kind": span.get("kind"),
                    "tags": span.get("tags", {}),
                })
            if error is not None and not spans:
                emit({"format": "zipkin", "valid": False, "error": error})
            self.send_response(400 if error else 202)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--otlp-port", type=int, default=4317)
    parser.add_argument("--zipkin-port", type=int, default=9411)
    parser.add_argument("--schema", required=True)
    args = parser.parse_args()
    with open(args.schema) as f:
        api = yaml.safe_load(f)
    # Zipkin's Swagger definitions, as a JSON Schema whose root is ListOfSpans.
    schema = {"$ref": "#/definitions/ListOfSpans", "definitions": api["definitions"]}
    jsonschema.Draft4Validator.check_schema(schema)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    server.add_insecure_port(f"0.0.0.0:{args.otlp_port}")
    server.start()
    zipkin = ThreadingHTTPServer(("0.0.0.0", args.zipkin_port), zipkin_handler(schema))
    emit({"ready": True})
    zipkin.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
