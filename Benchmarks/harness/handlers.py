"""The handlers section: every handler kind against the noop drain, and exec against amqp-consume."""
import subprocess
import sys
import time

from .util import ROOT, descendants, log, median, proc_cpu


def section_handlers(h, rep):
    """Per handler kind on 100-byte messages, prefetch 100, against the noop drain and amqp-consume."""
    s = h.s
    prefetch = 100
    queue = h.new_queue("handlers")
    port_file = h.work / "http.port"
    port_file.unlink(missing_ok=True)
    server = h.spawn("http-sink", [sys.executable, ROOT / "Benchmarks/python/http_sink.py", port_file])
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or server.poll_exit(0):
            raise RuntimeError(f"the HTTP sink did not start\n{server.tail()}")
        time.sleep(0.05)
    port = int(port_file.read_text())
    python = sys.executable
    worker = str(ROOT / "Examples/pipe-worker.py")
    kinds = [
        ("noop", {"kind": "noop"}, s.handler_count, 8),
        ("plugin (C, acks at once)", {"kind": "plugin", "library": str(h.plugin), "config": {"mode": "noop"}},
         s.handler_count, 8),
        ("pipe x1 (Examples/pipe-worker.py, 8 in flight)",
         {"kind": "pipe", "command": [python, worker], "instances": 1, "max_in_flight_per_instance": 8},
         s.handler_count, 8),
        ("pipe x4 (Examples/pipe-worker.py, 2 in flight each)",
         {"kind": "pipe", "command": [python, worker], "instances": 4, "max_in_flight_per_instance": 2},
         s.handler_count, 8),
        ("http (Python ThreadingHTTPServer)", {"kind": "http", "url": f"http://127.0.0.1:{port}/sink"},
         s.http_count, 8),
        ("exec /bin/cat, concurrency 1", {"kind": "exec", "command": ["/bin/cat"]}, s.exec_count, 1),
        ("exec /bin/cat, concurrency 8", {"kind": "exec", "command": ["/bin/cat"]}, s.exec_count, 8),
        ("amqp-consume -p 100 /bin/cat", None, s.exec_count, 1),
    ]
    runs = {name: [] for name, *_ in kinds}

    def workers_cpu(proc):
        return {"handler_cpu_s": sum(proc_cpu(p) or 0 for p in descendants(proc.pid))}

    for r in range(s.rounds):
        for name, handler, count, concurrency in kinds:
            h.prefill(queue, count)
            if handler is None:
                argv = ["amqp-consume", "-u", h.tools_url, "-q", queue, "-p", prefetch, "-c", count, "/bin/cat"]
                m = h.consume("amqp-consume", argv, [queue], count, exits=True, stdout=subprocess.DEVNULL)
                m["handler_cpu_s"] = m["children_cpu_s"]
            else:
                kind = handler["kind"]
                probe = None
                if kind == "pipe":
                    probe = workers_cpu
                elif kind == "http":
                    before = proc_cpu(server.pid)
                    probe = lambda proc, before=before: {"handler_cpu_s": proc_cpu(server.pid) - before}  # noqa: E731
                m = h.warren_drain(f"handler-{kind}", queue, prefetch, count, handler, concurrency=concurrency,
                                   probe=probe)
                if kind == "exec":
                    m["handler_cpu_s"] = m["children_cpu_s"]
            m["leftover"] = h.purge(queue)
            runs[name].append(m)
            log(f"handler {name}: {m['rate']:,.0f} msg/s")
    server.stop(10)
    rep.runs["handlers"] = runs
    sec = "handlers"
    noop = runs["noop"]
    noop_rate = median(m["rate"] for m in noop)
    for name, handler, count, concurrency in kinds:
        rate = median(m["rate"] for m in runs[name])
        notes = []
        if name != "noop" and rate and noop_rate:
            notes.append(f"+{1e6 / rate - 1e6 / noop_rate:,.0f} us/msg vs noop")
        handler_cpu = [m.get("handler_cpu_s") for m in runs[name] if m.get("handler_cpu_s") is not None]
        if handler_cpu:
            per_100k = median(c * 100_000 / m["count"] for c, m in zip(handler_cpu, runs[name]))
            notes.append(f"handler side {per_100k:.1f} CPU s/100k")
        label = f"{name}, {count} msgs"
        if name.startswith("amqp-consume"):
            rep.add(sec, label, runs[name], notes="; ".join(
                notes[1:] + ["baseline for exec (runs one command at a time); CPU column = amqp-consume itself"]))
        elif name.startswith("pipe x4"):
            rep.ratio_row(sec, label, runs[name], noop, "noop", 0.25, "; ".join(notes))
        elif name.startswith("exec") and concurrency == 1:
            rep.ratio_row(sec, label, runs[name], runs["amqp-consume -p 100 /bin/cat"], "amqp-consume", 1.0,
                          "; ".join(notes))
        elif name.startswith("exec"):
            rep.ratio_row(sec, label, runs[name], runs["amqp-consume -p 100 /bin/cat"], "amqp-consume", None,
                          "; ".join(notes))
        elif name == "noop":
            rep.add(sec, label, runs[name], notes="reference for the handler rows")
        else:
            rep.ratio_row(sec, label, runs[name], noop, "noop", None, "; ".join(notes))
