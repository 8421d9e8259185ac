#!/usr/bin/env python3
"""A warren `pipe` worker: a template to copy (the protocol: README, "pipe"). Standard library only.

Warren starts this process once and keeps it running. For each message it writes one JSON line
to our stdin, followed by exactly `body_length` raw body bytes. We answer each request with one
JSON line on stdout carrying the same `id`, and flush. Whatever we print on stderr ends up in
warren's log. When warren stops, it closes our stdin: we finish and exit.

What this example does with a message:
- answers `ack` with an RPC reply (warren publishes it only when the message has `reply_to`):
  a small JSON object with the upper-cased body, the message id, the attempt and our pid;
- header `x-demo-verdict: reject|requeue|retry|error` answers with that verdict instead;
- header `x-demo-forward: <queue>` also publishes the body to that queue (before warren acks);
- header `x-demo-sleep-ms: <n>` sleeps first (to watch timeouts, or to kill us mid-message).
"""
import base64
import json
import os
import sys
import time


def handle(request, body):
    properties = request["properties"]
    headers = properties.get("headers") or {}

    delay_ms = int(headers.get("x-demo-sleep-ms", 0))
    if delay_ms > 0:
        print(f"pid {os.getpid()} sleeping {delay_ms} ms on message {properties.get('message_id')}",
              file=sys.stderr, flush=True)
        time.sleep(delay_ms / 1000)

    verdict = headers.get("x-demo-verdict", "ack")
    if verdict != "ack":
        answer = {"verdict": verdict, "error": f"x-demo-verdict asked for {verdict}"}
        if verdict == "retry":
            answer["delay"] = "1s"
        return answer

    text = body.decode("utf-8", errors="replace")
    reply = {"body": text.upper(), "message_id": properties.get("message_id"),
             "attempt": request["attempt"], "pid": os.getpid()}
    answer = {"verdict": "ack", "reply": json.dumps(reply)}

    forward_to = headers.get("x-demo-forward")
    if forward_to:
        answer["publish"] = [{
            "exchange": "",
            "routing_key": forward_to,
            "body_base64": base64.b64encode(body).decode("ascii"),  # any bytes, unchanged
            "properties": {"content_type": properties.get("content_type"),
                           "message_id": properties.get("message_id"),
                           "headers": {"x-forwarded-by": "pipe-worker"}},
        }]
    return answer


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = stdin.readline()
        if not line:
            return  # warren closed our stdin: it is stopping
        request = json.loads(line)
        body = stdin.read(request["body_length"])  # blocks until all the bytes are there
        if len(body) < request["body_length"]:
            return  # stdin closed mid-request: warren is stopping
        answer = handle(request, body)
        answer["id"] = request["id"]
        stdout.write(json.dumps(answer).encode("utf-8") + b"\n")
        stdout.flush()


if __name__ == "__main__":
    main()
