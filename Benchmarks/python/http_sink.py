#!/usr/bin/env python3
"""The local HTTP server behind the `http` handler in scripts/bench: Python's standard-library
ThreadingHTTPServer with HTTP/1.1 keep-alive, answering every request 200 with an empty body
after reading it. One thread per connection and the GIL make it the likely bottleneck: the
harness reports its CPU next to warren's so that the reader can tell.

    http_sink.py PORT_FILE     binds 127.0.0.1 on a free port and writes the port to PORT_FILE
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would cost more than the request


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    server.daemon_threads = True
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
