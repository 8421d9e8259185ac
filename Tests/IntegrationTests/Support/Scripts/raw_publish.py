#!/usr/bin/env python3
"""Hand-encoded AMQP 0-9-1 frames, so a test can send what no well-behaved client library would:
headers nested thousands of levels deep, duplicate keys, non-UTF-8 short strings, typed header
values of any width. Standard library only.

As a command (used by HostileInputTests):

    raw_publish.py HOST PORT QUEUE MESSAGE_ID DEPTH

publishes to the default exchange with routing key QUEUE a body "deep" whose headers hold
{"deep": {"n": {"n": ... {"leaf": 1}}}} nested DEPTH levels, and "x-test": "success".
Exits 0 once the broker confirmed the publish (confirm.select), 1 otherwise.

As a module (import it by path, e.g. with importlib), `Connection` offers: `publish` with any
properties (short strings as str or bytes, headers as a dict or a list of pairs whose values are
Python values or typed `Field`s), `declare_queue`, `declare_passive` (message and consumer counts, or None when
the queue does not exist), `delete_queue`, and `get` (basic.get, decoding every content header
property and the headers table: field types S l I t x F A b B s u i d f T V D).
"""
import socket
import struct
import sys
import urllib.parse
from collections import namedtuple

# A typed field-table value: `kind` is the AMQP field type character, `value` its Python value
# (bytes for S and x, a list of Fields for A, a list of (key, Field) pairs for F, None for V,
# (scale, unscaled) for D; see MAX_DECODE_DEPTH for tables and arrays nested very deep).
Field = namedtuple("Field", "kind value")


class Raw(bytes):
    """A field value already encoded (type character included): written as it is."""


class AMQPClosed(Exception):
    """The broker closed the channel or the connection: `code` and `text` say why."""

    def __init__(self, what, code, text):
        super().__init__(f"{what} closed by the broker: {code} {text}")
        self.what, self.code, self.text = what, code, text


# ---------------------------------------------------------------------------------- encoding

def as_bytes(s):
    return s if isinstance(s, bytes) else s.encode()


def short(s):
    b = as_bytes(s)
    return struct.pack("B", len(b)) + b


def long_string(b):
    b = as_bytes(b)
    return struct.pack(">I", len(b)) + b


_SCALARS = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q",
            "f": ">f", "d": ">d", "T": ">Q"}


def field(value):
    """Encodes one field value (type character first). Python values get a natural type: str and
    bytes S, bool t, int l, float d, dict and lists of pairs F, list A, None V."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, Field):
        kind, v = value
        if kind in _SCALARS:
            return kind.encode() + struct.pack(_SCALARS[kind], v)
        if kind in "Sx":
            return kind.encode() + long_string(v)
        if kind == "t":
            return b"t" + struct.pack("B", 1 if v else 0)
        if kind == "F":
            return b"F" + table(v)
        if kind == "A":
            return b"A" + array(v)
        if kind == "V":
            return b"V"
        if kind == "D":
            scale, unscaled = v
            return b"D" + struct.pack(">Bi", scale, unscaled)
        raise ValueError(f"unknown field type {kind!r}")
    if isinstance(value, (str, bytes)):
        return b"S" + long_string(value)
    if isinstance(value, bool):
        return b"t" + struct.pack("B", 1 if value else 0)
    if isinstance(value, int):
        return b"l" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, dict):
        return b"F" + table(value)
    if isinstance(value, list):
        return b"A" + array(value)
    if value is None:
        return b"V"
    raise TypeError(f"no AMQP field type for {type(value).__name__}")


def table(entries):
    """A field table from a dict or a list of (key, value) pairs (duplicates kept, in order)."""
    pairs = entries.items() if isinstance(entries, dict) else entries
    body = b"".join(short(k) + field(v) for k, v in pairs)
    return struct.pack(">I", len(body)) + body


def array(values):
    body = b"".join(field(v) for v in values)
    return struct.pack(">I", len(body)) + body


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, args):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


# Content header properties in flag order (bit 15 first): name, wire type.
PROPERTIES = [("content_type", "short"), ("content_encoding", "short"), ("headers", "table"),
              ("delivery_mode", "octet"), ("priority", "octet"), ("correlation_id", "short"),
              ("reply_to", "short"), ("expiration", "short"), ("message_id", "short"),
              ("timestamp", "longlong"), ("type", "short"), ("user_id", "short"),
              ("app_id", "short"), ("cluster_id", "short")]


def content_properties(properties):
    """Flags and values for the properties dict (names as in PROPERTIES)."""
    unknown = set(properties) - {name for name, _ in PROPERTIES}
    if unknown:
        raise ValueError(f"unknown properties {sorted(unknown)}")
    flags, out = 0, b""
    for bit, (name, kind) in zip(range(15, 1, -1), PROPERTIES):
        if name not in properties or properties[name] is None:
            continue
        flags |= 1 << bit
        value = properties[name]
        if kind == "short":
            out += short(value)
        elif kind == "table":
            out += value if isinstance(value, Raw) else table(value)
        elif kind == "octet":
            out += struct.pack("B", value)
        else:
            out += struct.pack(">Q", value)
    return struct.pack(">H", flags) + out


# ---------------------------------------------------------------------------------- decoding

# Tables and arrays nested deeper than this are not decoded: their Field holds the encoded
# content as bytes (without the length), so a hostile message cannot exhaust Python's recursion limit.
MAX_DECODE_DEPTH = 64


class Reader:
    def __init__(self, data, depth=0):
        self.data, self.at, self.depth = data, 0, depth

    def take(self, n):
        if self.at + n > len(self.data):
            raise ValueError("truncated AMQP data")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def short(self):
        return self.take(self.unpack("B"))

    def long_string(self):
        return self.take(self.unpack(">I"))

    def table(self):
        inner = Reader(self.long_string(), self.depth + 1)
        pairs = []
        while inner.at < len(inner.data):
            key = inner.short().decode("utf-8", "replace")
            pairs.append((key, inner.field()))
        return pairs

    def array(self):
        inner = Reader(self.long_string(), self.depth + 1)
        values = []
        while inner.at < len(inner.data):
            values.append(inner.field())
        return values

    def field(self):
        kind = self.take(1).decode("latin-1")
        if kind in _SCALARS:
            return Field(kind, self.unpack(_SCALARS[kind]))
        if kind in "Sx":
            return Field(kind, self.long_string())
        if kind == "t":
            return Field(kind, self.unpack("B") != 0)
        if kind in "FA" and self.depth >= MAX_DECODE_DEPTH:
            return Field(kind, self.long_string())
        if kind == "F":
            return Field(kind, self.table())
        if kind == "A":
            return Field(kind, self.array())
        if kind == "V":
            return Field(kind, None)
        if kind == "D":
            scale = self.unpack("B")
            return Field(kind, (scale, self.unpack(">i")))
        raise ValueError(f"unknown field type {kind!r}")


def decode_properties(payload):
    """(body size, properties dict) from a content header frame payload."""
    r = Reader(payload)
    r.unpack(">H")  # class id
    r.unpack(">H")  # weight
    size = r.unpack(">Q")
    flags = r.unpack(">H")
    properties = {}
    for bit, (name, kind) in zip(range(15, 1, -1), PROPERTIES):
        if not flags & (1 << bit):
            continue
        if kind == "short":
            properties[name] = r.short()
        elif kind == "table":
            properties[name] = r.table()
        elif kind == "octet":
            properties[name] = r.unpack("B")
        else:
            properties[name] = r.unpack(">Q")
    return size, properties


class Message:
    """A message from basic.get: `properties` (short strings as bytes; `headers` a list of
    (key, Field) pairs in wire order), `body` (bytes), `routing_key`, `exchange`, `redelivered`."""

    def __init__(self, exchange, routing_key, redelivered, properties, body):
        self.exchange, self.routing_key, self.redelivered = exchange, routing_key, redelivered
        self.properties, self.body = properties, body

    @property
    def headers(self):
        return self.properties.get("headers") or []

    def header(self, key):
        """The first occurrence of `key` (as RabbitMQ reads it): a Field, or None."""
        for k, v in self.headers:
            if k == key:
                return v
        return None

    def header_text(self, key):
        """A string header as text (invalid UTF-8 replaced), another type as repr, None if absent."""
        value = self.header(key)
        if value is None:
            return None
        if value.kind in "Sx":
            return value.value.decode("utf-8", "replace")
        return repr(value.value)


# -------------------------------------------------------------------------------- connection

class Connection:
    """One AMQP connection with one channel in use; not thread-safe."""

    def __init__(self, host="127.0.0.1", port=5672, user="guest", password="guest", vhost="/",
                 timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.channel = 0
        self.confirming = False
        self.next_tag = 1
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10, channel=0)
        response = b"\x00" + as_bytes(user) + b"\x00" + as_bytes(password)
        self.sock.sendall(method(0, 10, 11, table([]) + short("PLAIN") + long_string(response) + short("en_US")))
        tune = self.expect(10, 30, channel=0)
        channel_max, frame_max, _ = struct.unpack(">HIH", tune[:8])
        self.frame_max = frame_max or 131072
        self.sock.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, self.frame_max, 0)))
        self.sock.sendall(method(0, 10, 40, short(vhost) + short("") + b"\x00"))
        self.expect(10, 41, channel=0)
        self.open_channel()

    @classmethod
    def from_url(cls, url, timeout=10):
        """amqp://user:password@host:port/vhost; no path or "/" is the vhost "/"."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        vhost = urllib.parse.unquote(path) if path else "/"
        return cls(parts.hostname or "127.0.0.1", parts.port or 5672,
                   urllib.parse.unquote(parts.username or "guest"),
                   urllib.parse.unquote(parts.password or "guest"), vhost, timeout)

    # -- frames

    def recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise AMQPClosed("connection", 0, "socket closed")
        return data

    def read_frame(self):
        while len(self.buf) < 7:
            self.buf += self.recv()
        kind, channel, size = struct.unpack(">BHI", self.buf[:7])
        while len(self.buf) < 8 + size:
            self.buf += self.recv()
        payload = self.buf[7:7 + size]
        self.buf = self.buf[8 + size:]
        return kind, channel, payload

    def read_method(self):
        """The next method frame: (channel, (class, method), arguments). A close from the broker
        is answered with close-ok and raised as AMQPClosed."""
        while True:
            kind, channel, payload = self.read_frame()
            if kind != 1:
                continue
            got = struct.unpack(">HH", payload[:4])
            args = payload[4:]
            if got == (10, 50):
                r = Reader(args)
                code, text = r.unpack(">H"), r.short().decode("utf-8", "replace")
                self.sock.sendall(method(0, 10, 51, b""))
                raise AMQPClosed("connection", code, text)
            if got == (20, 40):
                r = Reader(args)
                code, text = r.unpack(">H"), r.short().decode("utf-8", "replace")
                self.sock.sendall(method(channel, 20, 41, b""))
                if channel == self.channel:
                    self.open_channel()
                raise AMQPClosed("channel", code, text)
            return channel, got, args

    def expect(self, class_id, method_id, channel=None):
        channel = self.channel if channel is None else channel
        while True:
            ch, got, args = self.read_method()
            if ch == channel and got == (class_id, method_id):
                return args

    def read_content(self):
        """The content header and body frames that follow basic.get-ok or basic.return."""
        kind, _, payload = self.read_frame()
        if kind != 2:
            raise ValueError(f"expected a content header frame, got type {kind}")
        size, properties = decode_properties(payload)
        body = b""
        while len(body) < size:
            kind, _, payload = self.read_frame()
            if kind != 3:
                raise ValueError(f"expected a body frame, got type {kind}")
            body += payload
        return properties, body

    def open_channel(self):
        """Opens a fresh channel (a closed channel number is not reused)."""
        self.channel += 1
        self.sock.sendall(method(self.channel, 20, 10, short("")))
        self.expect(20, 11)
        if self.confirming:
            self.confirming = False
            self.confirm_select()

    def confirm_select(self):
        self.sock.sendall(method(self.channel, 85, 10, b"\x00"))
        self.expect(85, 11)
        self.confirming = True
        self.next_tag = 1

    # -- operations

    def publish(self, routing_key, body=b"", properties=None, exchange="", mandatory=False):
        """Publishes one message. In confirm mode, waits for the broker's answer and returns
        "ack", "nack" or "returned" (mandatory and unroutable: basic.return, then ack);
        otherwise returns None. Properties: names as in PROPERTIES."""
        body = as_bytes(body)
        header = struct.pack(">HHQ", 60, 0, len(body)) + content_properties(properties or {})
        out = (method(self.channel, 60, 40, struct.pack(">H", 0) + short(exchange) + short(routing_key)
                      + struct.pack("B", 1 if mandatory else 0)) + frame(2, self.channel, header))
        chunk = self.frame_max - 8
        for start in range(0, len(body), chunk):
            out += frame(3, self.channel, body[start:start + chunk])
        self.sock.sendall(out)
        if not self.confirming:
            return None
        tag = self.next_tag
        self.next_tag += 1
        returned = False
        while True:
            ch, got, args = self.read_method()
            if ch != self.channel:
                continue
            if got == (60, 50):  # basic.return: its content follows
                self.read_content()
                returned = True
            elif got in ((60, 80), (60, 120)) and struct.unpack(">Q", args[:8])[0] >= tag:
                if got == (60, 120):
                    return "nack"
                return "returned" if returned else "ack"

    def declare_queue(self, queue, durable=True, arguments=None):
        """Declares a queue (arguments: a dict of Python values, e.g. {"x-queue-type": "quorum"});
        returns its message count."""
        flags = 0x02 if durable else 0x00
        self.sock.sendall(method(self.channel, 50, 10, struct.pack(">H", 0) + short(queue) + struct.pack("B", flags)
                                 + table(list((arguments or {}).items()))))
        r = Reader(self.expect(50, 11))
        r.short()
        return r.unpack(">I")

    def declare_passive(self, queue):
        """(message count, consumer count), or None when the queue does not exist."""
        self.sock.sendall(method(self.channel, 50, 10, struct.pack(">H", 0) + short(queue) + b"\x01"  # passive
                                 + table([])))
        try:
            args = self.expect(50, 11)
        except AMQPClosed as closed:
            if closed.what == "channel" and closed.code == 404:
                return None
            raise
        r = Reader(args)
        r.short()
        return r.unpack(">I"), r.unpack(">I")

    def delete_queue(self, queue):
        """Deletes the queue (if unused or not); returns the number of messages it held."""
        self.sock.sendall(method(self.channel, 50, 40, struct.pack(">H", 0) + short(queue) + b"\x00"))
        return struct.unpack(">I", self.expect(50, 41)[:4])[0]

    def get(self, queue, no_ack=True):
        """basic.get: a Message, or None when the queue is empty."""
        self.sock.sendall(method(self.channel, 60, 70, struct.pack(">H", 0) + short(queue)
                                 + struct.pack("B", 1 if no_ack else 0)))
        while True:
            ch, got, args = self.read_method()
            if ch != self.channel:
                continue
            if got == (60, 72):  # get-empty
                return None
            if got == (60, 71):
                r = Reader(args)
                r.unpack(">Q")  # delivery tag
                redelivered = r.unpack("B") != 0
                exchange, routing_key = r.short(), r.short()
                properties, body = self.read_content()
                return Message(exchange, routing_key, redelivered, properties, body)

    def close(self):
        try:
            self.sock.sendall(method(0, 10, 50, struct.pack(">HH", 200, 0) + short("bye") + struct.pack(">HH", 0, 0)))
            self.expect(10, 51, channel=0)
        except (OSError, AMQPClosed):
            pass
        self.sock.close()


# ------------------------------------------------------------------------------------- CLI

def nested(depth):
    """A table `depth` levels deep, encoded without recursion."""
    value = b"F" + table([("leaf", Field("I", 1))])
    for _ in range(depth):
        value = b"F" + table([("n", Raw(value))])
    return Raw(value)


def main():
    host, port, queue, message_id, depth = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    try:
        c = Connection(host, port)
        c.confirm_select()
        outcome = c.publish(queue, b"deep", {"message_id": message_id,
                                             "headers": [("deep", nested(depth)), ("x-test", "success")]})
        c.close()
    except (OSError, AMQPClosed) as error:
        print(error, file=sys.stderr)
        return 1
    if outcome != "ack":
        print(f"publish {outcome}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
