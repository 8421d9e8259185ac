#!/usr/bin/env python3
"""Publishes one message with hand-encoded AMQP 0-9-1 frames, so a test can send what no
well-behaved client library would: headers nested thousands of levels deep, duplicate keys,
non-UTF-8 short strings. Usage:

    raw_publish.py HOST PORT QUEUE MESSAGE_ID DEPTH

publishes to the default exchange with routing key QUEUE a body "deep" whose headers hold
{"deep": {"n": {"n": ... {"leaf": 1}}}} nested DEPTH levels, and "x-test": "success".
Exits 0 once the broker confirmed the publish (confirm.select), 1 otherwise.
"""
import socket
import struct
import sys


def short(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("B", len(b)) + b


def long_string(b):
    return struct.pack(">I", len(b)) + b


def table(entries):
    body = b"".join(short(k) + v for k, v in entries)
    return struct.pack(">I", len(body)) + body


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, args):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def read_frame(self):
        while len(self.buf) < 7:
            self.buf += self.recv()
        kind, channel, size = struct.unpack(">BHI", self.buf[:7])
        while len(self.buf) < 8 + size:
            self.buf += self.recv()
        payload = self.buf[7:7 + size]
        self.buf = self.buf[8 + size:]
        return kind, channel, payload

    def recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise SystemExit("connection closed by the broker")
        return data

    def expect(self, class_id, method_id):
        while True:
            kind, _, payload = self.read_frame()
            if kind != 1:
                continue
            got = struct.unpack(">HH", payload[:4])
            if got == (class_id, method_id):
                return payload[4:]
            if got in ((10, 50), (20, 40)):
                raise SystemExit("closed by the broker: %r" % payload[4:80])


def nested(depth):
    value = b"F" + table([("leaf", b"I" + struct.pack(">i", 1))])
    for _ in range(depth):
        value = b"F" + table([("n", value)])
    return value


def main():
    host, port, queue, message_id, depth = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    c = Conn(host, port)
    c.sock.sendall(b"AMQP\x00\x00\x09\x01")
    c.expect(10, 10)
    response = b"\x00guest\x00guest"
    c.sock.sendall(method(0, 10, 11, table([]) + short("PLAIN") + long_string(response) + short("en_US")))
    tune = c.expect(10, 30)
    channel_max, frame_max, heartbeat = struct.unpack(">HIH", tune[:8])
    c.sock.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    c.sock.sendall(method(0, 10, 40, short("/") + short("") + b"\x00"))
    c.expect(10, 41)
    c.sock.sendall(method(1, 20, 10, short("")))
    c.expect(20, 11)
    c.sock.sendall(method(1, 85, 10, b"\x00"))
    c.expect(85, 11)
    body = b"deep"
    headers = table([("deep", nested(depth)), ("x-test", b"S" + long_string(b"success"))])
    flags = (1 << 13) | (1 << 7)  # headers, message_id
    properties = struct.pack(">H", flags) + headers + short(message_id)
    header = struct.pack(">HHQ", 60, 0, len(body)) + properties
    c.sock.sendall(method(1, 60, 40, struct.pack(">H", 0) + short("") + short(queue) + b"\x00")
                   + frame(2, 1, header) + frame(3, 1, body))
    c.expect(60, 80)  # basic.ack
    c.sock.sendall(method(0, 10, 50, struct.pack(">HH", 200, 0) + short("bye") + struct.pack(">HH", 0, 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
