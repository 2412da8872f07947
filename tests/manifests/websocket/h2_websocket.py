"""A WebSocket client over HTTP/2 extended CONNECT (RFC 8441), on Python's `h2`.

`h2_websocket.py HOST PORT AUTHORITY PATH --count N`: opens one HTTP/2 connection (prior
knowledge, cleartext), waits for the server's SETTINGS, and if they carry
SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 sends `CONNECT` with `:protocol: websocket` for PATH.
On a 2xx it reads the first WebSocket message (the echo server's description of the request
it got), then sends N masked text messages, reading each echo, then a close frame. Prints
one JSON line: `connect_protocol` (the setting's value), `status`, `request`, `echoed`,
`mismatched`, `closed` (the server's close code).
"""

import argparse
import json
import os
import socket
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings

TEXT = 0x1
CLOSE = 0x8


def ws_frame(opcode, payload):
    """A client (masked) WebSocket frame, RFC 6455 §5.2."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_parse(buffer):
    """One complete server frame from the start of `buffer`: (opcode, payload, rest) or
    None while incomplete."""
    if len(buffer) < 2:
        return None
    opcode = buffer[0] & 0x0F
    size = buffer[1] & 0x7F
    at = 2
    if size == 126:
        if len(buffer) < 4:
            return None
        size = struct.unpack("!H", buffer[2:4])[0]
        at = 4
    elif size == 127:
        if len(buffer) < 10:
            return None
        size = struct.unpack("!Q", buffer[2:10])[0]
        at = 10
    if len(buffer) < at + size:
        return None
    return opcode, buffer[at : at + size], buffer[at + size :]


class Client:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.stream = None
        self.status = None
        self.data = b""
        self.ended = False
        self.settings = False

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(chunk):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings = True
            elif isinstance(event, h2.events.ResponseReceived) and event.stream_id == self.stream:
                self.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == self.stream:
                self.data += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                if event.stream_id == self.stream:
                    self.ended = True
        self.flush()

    def message(self):
        while True:
            parsed = ws_parse(self.data)
            if parsed is not None:
                opcode, payload, self.data = parsed
                return opcode, payload
            if self.ended:
                return None
            self.pump()

    def send(self, opcode, payload):
        self.conn.send_data(self.stream, ws_frame(opcode, payload))
        self.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("authority")
    parser.add_argument("path")
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()

    client = Client(args.host, args.port)
    while not client.settings:
        client.pump()
    enabled = client.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0)
    result = {"connect_protocol": enabled}
    if enabled != 1:
        print(json.dumps(result), flush=True)
        return
    client.stream = client.conn.get_next_available_stream_id()
    client.conn.send_headers(
        client.stream,
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", args.path),
            (":authority", args.authority),
            ("sec-websocket-version", "13"),
        ],
    )
    client.flush()
    while client.status is None and not client.ended:
        client.pump()
    result["status"] = client.status
    if client.status is None or not 200 <= client.status < 300:
        print(json.dumps(result), flush=True)
        return
    first = client.message()
    result["request"] = json.loads(first[1]) if first and first[0] == TEXT else None
    echoed = 0
    mismatched = 0
    for i in range(args.count):
        message = (f"message {i} " + "x" * (i * 37 % 1000)).encode()
        client.send(TEXT, message)
        reply = client.message()
        if reply == (TEXT, message):
            echoed += 1
        else:
            mismatched += 1
    client.send(CLOSE, struct.pack("!H", 1000))
    reply = client.message()
    result["closed"] = struct.unpack("!H", reply[1][:2])[0] if reply and reply[0] == CLOSE else None
    result.update(echoed=echoed, mismatched=mismatched)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
