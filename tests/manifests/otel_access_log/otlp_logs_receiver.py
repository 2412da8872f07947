"""An OTLP/gRPC logs collector for the lab, on the official OpenTelemetry protos
(`opentelemetry-proto`'s `LogsService`, served by `grpcio`).

`--port P` serves `opentelemetry.proto.collector.logs.v1.LogsService/Export` and prints one
JSON line per log record received: `body` (its string), `attributes` (key: string or int
value), `trace_id` (hex), `time_unix_nano`, and `resource` (the record's resource's
attributes), flushed at once so the test reads it from the pod's log.
"""

import argparse
import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request, context):
        for resource_logs in request.resource_logs:
            resource = {kv.key: value(kv.value) for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    line = {
                        "body": value(record.body),
                        "attributes": {kv.key: value(kv.value) for kv in record.attributes},
                        "trace_id": record.trace_id.hex(),
                        "time_unix_nano": record.time_unix_nano,
                        "resource": resource,
                        "scope": scope_logs.scope.name,
                    }
                    print(json.dumps(line), flush=True)
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=4317)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    server.add_insecure_port(f"0.0.0.0:{args.port}")
    server.start()
    print(json.dumps({"listening": args.port}), flush=True)
    sys.stdout.flush()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
