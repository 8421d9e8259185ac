#!/usr/bin/env python3
"""A paired drain, independent of the benchmark harness: warren's noop drain against the raw C consumer.

Each round fills a fresh queue with COUNT 100-byte messages, then times one consumer from its
launch to the empty queue, then the other on a refilled queue (the order alternates by round).
CPU is the consumer's own (user + system, from wait4), start-up and shutdown included.

    Benchmarks/paired-drain.py [--mode batched|immediate] [--prefetch 100] [--count 200000] [--rounds 5]

Needs the tools `scripts/bench` builds (.build/bench/bin) and a release build of warren, and a
broker at WARREN_BENCH_URL (default amqp://guest:guest@127.0.0.1:5672/).
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".build" / "bench" / "bin"


def run_tool(*argv):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def cpu_seconds(usage):
    return usage.ru_utime + usage.ru_stime


def fill(url, queue, count):
    run_tool(TOOLS / "bench-queue", "declare", url, queue)
    run_tool(TOOLS / "bench-publish", url, queue, count, 100, 1000)


def drain_c(url, queue, prefetch, count, mode):
    argv = [TOOLS / "bench-consume", url, queue, prefetch, count]
    argv += ["each"] if mode == "immediate" else ["multiple", max(1, prefetch // 2)]
    started = time.monotonic()
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if status != 0:
        raise RuntimeError(f"bench-consume failed: status {status}")
    return seconds, cpu_seconds(usage)


def drain_warren(url, queue, prefetch, count, mode, warren, directory):
    config = Path(directory) / f"{queue}.toml"
    config.write_text(f"""[broker]
urls = ["{url}"]

[log]
level = "warning"

[control]
socket = ""

[[queues]]
name = "{queue}"
declare = false
durable = false
retry = false
dead_letter = "broker"
prefetch = {prefetch}
concurrency = 8
ack_mode = "{mode}"
handler = "h"

[handlers.h]
kind = "noop"
""")
    started = time.monotonic()
    proc = subprocess.Popen([warren, "run", "--config", str(config)], stdout=subprocess.DEVNULL)
    try:
        watched = json.loads(run_tool(TOOLS / "bench-queue", "watch", "-p", proc.pid, "-n", count, "-t", 300, url, queue))
    finally:
        proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"warren exited with status {status}")
    # bench-queue reports CLOCK_MONOTONIC, the clock of time.monotonic().
    return watched["end"] - started, cpu_seconds(usage)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["batched", "immediate"], default="batched")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warren", default=str(ROOT / ".build" / "release" / "warren"))
    args = parser.parse_args()
    url = os.environ.get("WARREN_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")
    rate_ratios, cpu_ratios = [], []
    print(f"paired drain: {args.count} messages, prefetch {args.prefetch}, {args.mode} (C: "
          f"{'ack each' if args.mode == 'immediate' else 'ack multiple every ' + str(max(1, args.prefetch // 2))}), "
          f"load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as directory:
        for round_index in range(args.rounds):
            results = {}
            order = ["c", "warren"] if round_index % 2 == 0 else ["warren", "c"]
            for impl in order:
                queue = f"paired.{os.getpid()}.{round_index}.{impl}"
                fill(url, queue, args.count)
                try:
                    if impl == "c":
                        results[impl] = drain_c(url, queue, args.prefetch, args.count, args.mode)
                    else:
                        results[impl] = drain_warren(url, queue, args.prefetch, args.count, args.mode, args.warren, directory)
                finally:
                    run_tool(TOOLS / "bench-queue", "delete", url, queue)
            (c_seconds, c_cpu), (w_seconds, w_cpu) = results["c"], results["warren"]
            rate_ratios.append(c_seconds / w_seconds)
            cpu_ratios.append(w_cpu / c_cpu)
            print(f"round {round_index + 1}: C {args.count / c_seconds:,.0f} msg/s, {c_cpu * 1e6 / args.count:.2f} us CPU/msg; "
                  f"warren {args.count / w_seconds:,.0f} msg/s, {w_cpu * 1e6 / args.count:.2f} us CPU/msg; "
                  f"rate {rate_ratios[-1]:.2f}x, CPU {cpu_ratios[-1]:.2f}x")
    print(f"median: warren rate {statistics.median(rate_ratios):.2f}x C (rounds {min(rate_ratios):.2f}-{max(rate_ratios):.2f}), "
          f"CPU per message {statistics.median(cpu_ratios):.2f}x C (rounds {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f})")


if __name__ == "__main__":
    main()
