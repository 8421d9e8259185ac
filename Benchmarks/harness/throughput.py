"""Throughput sections: the noop drain, publishing, and the FastStream peer, each against the C baseline."""
import subprocess
import sys

from .util import ROOT, log, paired_ratio


def section_drain(h, rep):
    """warren run (noop) against bench-consume on the same pre-filled queue, per prefetch and ack mode."""
    s = h.s
    for prefetch in s.prefetches:
        queue = h.new_queue("drain")
        k = max(1, prefetch // 2)
        runs = {"c-each": [], "c-multiple": [], "warren-immediate": [], "warren-batched": []}
        for r in range(s.rounds):
            for c_mode, w_mode in (("each", "immediate"), ("multiple", "batched")):
                order = [("c", c_mode), ("warren", w_mode)]
                if r % 2:
                    order.reverse()
                for impl, mode in order:
                    h.prefill(queue, s.count)
                    if impl == "c":
                        m = h.c_drain(f"drain-c-{mode}-p{prefetch}", queue, prefetch, s.count, mode)
                    else:
                        m = h.warren_drain(f"drain-warren-{mode}-p{prefetch}", queue, prefetch, s.count,
                                           {"kind": "noop"}, ack_mode=mode)
                    m["leftover"] = h.purge(queue)
                    runs[f"{impl}-{mode}"].append(m)
                    log(f"drain p{prefetch} {impl} {mode}: {m['rate']:,.0f} msg/s, {m['cpu_per_100k']:.2f} CPU s/100k")
        rep.runs[f"drain-p{prefetch}"] = runs
        sec = "drain"
        rep.add(sec, f"C consumer, ack each, prefetch {prefetch}", runs["c-each"], notes="baseline")
        rep.ratio_row(sec, f"warren noop, immediate, prefetch {prefetch}", runs["warren-immediate"], runs["c-each"],
                      "C each", 0.95)
        rep.cpu_row(sec, f"  CPU per message, immediate, prefetch {prefetch}", runs["warren-immediate"],
                    runs["c-each"], "C each", 1.5)
        rep.add(sec, f"C consumer, ack multiple every {k}, prefetch {prefetch}", runs["c-multiple"], notes="baseline")
        rep.ratio_row(sec, f"warren noop, batched, prefetch {prefetch}", runs["warren-batched"], runs["c-multiple"],
                      "C multiple", 0.95)
        rep.cpu_row(sec, f"  CPU per message, batched, prefetch {prefetch}", runs["warren-batched"],
                    runs["c-multiple"], "C multiple", 1.5)


def section_publish(h, rep):
    """warren publish --count and the republish handler against bench-publish, window 1000."""
    s = h.s
    queue = h.new_queue("publish")
    source, target = h.new_queues("republish", 2)
    config = h.warren_config("publish", [h.queue_entry(queue, 100)], {"h": {"kind": "noop"}})
    warren_argv = [h.warren, "publish", "--config", config, "--routing-key", queue, "--file", h.body_file]
    runs = {"c": [], "warren": [], "republish-8": [], "republish-64": []}
    for r in range(s.rounds):
        order = ["c", "warren"] if r % 2 == 0 else ["warren", "c"]
        for impl in order:
            if impl == "c":
                m = h.run_to_exit("publish-c", [h.publish_tool, "-m", h.url, queue, s.count, s.body_size, s.window],
                                  s.count)
            else:
                m = h.run_to_exit("publish-warren", warren_argv + ["--count", s.count], s.count)
            m["queued"] = h.purge(queue)
            runs[impl].append(m)
            log(f"publish {impl}: {m['rate']:,.0f} msg/s")
        for concurrency in (8, 64):
            h.prefill(source, s.count)
            handler = {"kind": "republish", "exchange": "", "routing_key": target}
            m = h.warren_drain(f"republish-c{concurrency}", source, 1000, s.count, handler, concurrency=concurrency)
            m["moved"] = h.purge(target)
            runs[f"republish-{concurrency}"].append(m)
            log(f"republish concurrency {concurrency}: {m['rate']:,.0f} msg/s")
    startup = h.run_to_exit("publish-warren-one", warren_argv + ["--count", 1], 1)["seconds"]
    h.purge(queue)
    rep.runs["publish"] = runs
    rep.runs["publish"]["warren_publish_count_1_seconds"] = startup
    sec = "publish"
    rep.add(sec, f"C publisher, confirms, window {s.window}, mandatory", runs["c"],
            notes="baseline; wall time from spawn, start-up included")
    rep.ratio_row(sec, f"warren publish --count, window {s.window}", runs["warren"], runs["c"], "C publisher", 0.90,
                  notes=f"warren publish --count 1 takes {startup * 1000:.0f} ms")
    for concurrency in (8, 64):
        rep.ratio_row(sec, f"warren run, republish handler, prefetch 1000, concurrency {concurrency}",
                      runs[f"republish-{concurrency}"], runs["c"], "C publisher",
                      notes="consume + publish with confirms + ack")


def ensure_venv(h):
    venv = h.work / "venv"
    python = venv / "bin/python"
    if not python.exists():
        log("creating the FastStream virtualenv (pip install faststream[rabbit]==0.7.8)")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "faststream[rabbit]==0.7.8"], check=True)
    version = subprocess.run([python, "-c", "from importlib.metadata import version; "
                              "print(version('faststream'), version('aio-pika'))"],
                             capture_output=True, text=True, check=True).stdout.split()
    return python, version


def section_faststream(h, rep):
    """The same drain with a FastStream subscriber, next to the C consumer and warren (ack each)."""
    s = h.s
    python, versions = ensure_venv(h)
    script = ROOT / "Benchmarks/python/faststream_drain.py"
    n = s.py_count
    sec = "faststream"
    all_runs = {}
    for prefetch in s.prefetches:
        queue = h.new_queue("faststream")
        runs = {"c": [], "warren": [], "faststream": []}
        for r in range(s.rounds):
            order = ["c", "warren", "faststream"]
            order = order[r % 3:] + order[:r % 3]
            for impl in order:
                h.prefill(queue, n)
                if impl == "c":
                    m = h.c_drain(f"py-c-p{prefetch}", queue, prefetch, n, "each")
                elif impl == "warren":
                    m = h.warren_drain(f"py-warren-p{prefetch}", queue, prefetch, n, {"kind": "noop"},
                                       ack_mode="immediate")
                else:
                    m = h.consume(f"faststream-p{prefetch}", [python, script, h.url, queue, prefetch], [queue], n,
                                  stall=120)
                m["leftover"] = h.purge(queue)
                runs[impl].append(m)
                log(f"faststream section p{prefetch} {impl}: {m['rate']:,.0f} msg/s")
        all_runs[f"p{prefetch}"] = runs
        w_over_py = paired_ratio([m["rate"] for m in runs["warren"]], [m["rate"] for m in runs["faststream"]])
        rep.add(sec, f"C consumer, ack each, prefetch {prefetch}, {n} msgs", runs["c"], notes="baseline")
        rep.ratio_row(sec, f"warren noop, immediate, prefetch {prefetch}", runs["warren"], runs["c"], "C each")
        rep.ratio_row(sec, f"FastStream {versions[0]} (aio-pika {versions[1]}), prefetch {prefetch}",
                      runs["faststream"], runs["c"], "C each",
                      notes=f"warren is {w_over_py:.1f}x FastStream" if w_over_py else "")
    rep.runs["faststream"] = all_runs
