#!/usr/bin/env python3
"""A stand-in OTLP/HTTP collector for the span export benchmark (docs/performance.md, "Span
export"): accepts every POST to /v1/traces with 200 and an empty body, and counts requests and
bytes. It decodes nothing, so its own cost stays small beside warren's on a shared machine.

    Benchmarks/otlp-sink.py 4318 &
    WARREN_BENCH_TRACING="http://127.0.0.1:4318,1.0" scripts/bench --only drain ...

Prints `requests=N bytes=M` when stopped with SIGTERM or SIGINT.
"""
import http.server
import signal
import sys

sys.dont_write_bytecode = True
totals = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as an OTLP exporter expects

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)
        totals["requests"] += 1
        totals["bytes"] += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(*_):
        print(f"requests={totals['requests']} bytes={totals['bytes']}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
