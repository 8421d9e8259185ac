"""The latency section: a paced stream with the publish time in a header."""
import array
import time

from .util import MIB, log, median, percentile, proc_cpu, proc_status


def latency_stats(samples_ns, warmup):
    """Percentiles in ms of the samples after the first `warmup` ones (start-up transients)."""
    kept = sorted(samples_ns[warmup:])
    if not kept:
        return {"samples": 0}
    ms = lambda v: v / 1e6  # noqa: E731
    return {"samples": len(kept), "dropped_warmup": min(warmup, len(samples_ns)),
            "p50_ms": ms(percentile(kept, 0.50)), "p90_ms": ms(percentile(kept, 0.90)),
            "p99_ms": ms(percentile(kept, 0.99)), "p999_ms": ms(percentile(kept, 0.999)), "max_ms": ms(kept[-1]),
            "negative": sum(1 for v in kept if v < 0)}


def latency_c(h, queue, publish, count):
    """The C baseline: bench-consume records receive time minus the header at the header frame."""
    path = h.work / "latency-c.bin"
    consumer = h.spawn("latency-c", [h.consume_tool, "-l", path, h.url, queue, 100, count, "each"])
    try:
        h.wait_consumers([queue], consumer)
        publisher = h.run_to_exit("latency-publish", publish, count, timeout=h.s.latency_seconds * 3 + 60)
        if not consumer.poll_exit(60):
            raise RuntimeError(f"the C consumer did not finish\n{consumer.tail()}")
    finally:
        consumer.kill()
    result = latency_stats(list(array.array("q", path.read_bytes())), h.s.latency_rate)
    result["publisher"] = publisher["output"]
    return result


def latency_warren(h, queue, publish, count):
    """warren with the bench plugin (acks at once), which records when handle() is entered."""
    path = h.work / "latency-warren.bin"
    handler = {"kind": "plugin", "library": str(h.plugin),
               "config": {"mode": "latency", "path": str(path), "capacity": count}}
    config = h.warren_config("latency", [h.queue_entry(queue, 100)], {"h": handler})
    warren = h.spawn("latency-warren", [h.warren, "run", "--config", config])
    try:
        h.wait_consumers([queue], warren)
        publisher = h.run_to_exit("latency-publish", publish, count, timeout=h.s.latency_seconds * 3 + 60)
        h.watch(warren, [queue])
        deadline = time.monotonic() + 30
        while array.array("q", path.read_bytes()[:8])[0] < count and time.monotonic() < deadline:
            time.sleep(0.05)  # the last deliveries are in the plugin's hands by now
        status = proc_status(warren.pid)
        cpu = proc_cpu(warren.pid)
        warren.stop()
    finally:
        warren.kill()
    data = array.array("q", path.read_bytes())
    result = latency_stats(list(data[1:1 + min(data[0], count)]), h.s.latency_rate)
    result.update({"publisher": publisher["output"], "hwm_mib": status.get("VmHWM", 0) / MIB, "cpu_s_total": cpu})
    return result


def section_latency(h, rep):
    """A steady paced stream with the publish time in a header; publish-to-handler latency.

    Each round runs the C consumer and warren on the same stream one after the other; the table
    shows the median over rounds of each percentile (the C row is the floor of this machine)."""
    s = h.s
    rate, count = s.latency_rate, s.latency_rate * s.latency_seconds
    queue = h.new_queue("latency")
    publish = [h.publish_tool, "-t", "-r", rate, h.url, queue, count, s.body_size, s.window]
    results = {"c": [], "warren": []}
    for r in range(s.rounds):
        order = ["c", "warren"] if r % 2 == 0 else ["warren", "c"]
        for impl in order:
            result = (latency_c if impl == "c" else latency_warren)(h, queue, publish, count)
            results[impl].append(result)
            log(f"latency {impl}: p50 {result.get('p50_ms', 0):.2f} ms, p99 {result.get('p99_ms', 0):.2f} ms")
    rep.runs["latency"] = results
    sec = "latency"
    for impl, name in (("c", "C consumer, ack each"), ("warren", "warren, plugin handler (acks at once)")):
        runs = [r for r in results[impl] if r.get("samples")]
        if not runs:
            rep.add(sec, f"{name}: no samples", notes="no latency samples recorded")
            continue
        p = {key: median(r[key] for r in runs) for key in ("p50_ms", "p99_ms", "p999_ms", "max_ms")}
        is_warren = impl == "warren"
        per_round = ", ".join(f"{r['p99_ms']:.2f}" for r in runs)
        rep.add(sec, f"{name}, {rate}/s for {s.latency_seconds} s: p99", rate=rate,
                hwm=max(r["hwm_mib"] for r in runs) if is_warren else None, value=p["p99_ms"],
                value_text=f"p99 {p['p99_ms']:.2f} ms", target="p99 < 5 ms" if is_warren else "",
                passed=(p["p99_ms"] < 5.0) if is_warren else None,
                notes=f"p50 {p['p50_ms']:.2f} ms, p99.9 {p['p999_ms']:.2f} ms, max {p['max_ms']:.1f} ms; "
                      f"p99 per round {per_round}; {runs[0]['samples']} samples/round after 1 s warm-up")
