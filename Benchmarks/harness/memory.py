"""Memory sections: many queues at once, and RSS over a long run."""
import statistics
import threading
import time

from .util import MIB, proc_cpu, proc_status


def section_scale(h, rep):
    """100 queues in one config (start-up, memory, threads), and 10 queues at prefetch 1000 (peak RSS)."""
    s = h.s
    results = {}
    for label, n_queues, per_queue, prefetch in (("100 queues", s.scale_queues, s.scale_messages, 100),
                                                 ("10 queues", s.rss_queues, s.rss_messages, 1000)):
        queues = h.new_queues("scale", n_queues)
        backlog_first = prefetch == 1000  # so that every consumer holds a full prefetch window
        if backlog_first:
            for queue in queues:
                h.prefill(queue, per_queue)
        config = h.warren_config("scale", [h.queue_entry(q, prefetch, handler="h") for q in queues],
                                 {"h": {"kind": "noop"}})
        warren = h.spawn(f"scale-{n_queues}", [h.warren, "run", "--config", config])
        try:
            h.wait_consumers(queues, warren)
            consumers_up = time.monotonic() - warren.started
            before = proc_status(warren.pid)
            if not backlog_first:
                for queue in queues:  # warren drains while they are published
                    h.prefill(queue, per_queue)
            h.watch(warren, queues)
            after = proc_status(warren.pid)
            cpu = proc_cpu(warren.pid)
            time.sleep(2)  # idle for a moment: memory and threads once the burst is over
            idle = proc_status(warren.pid)
            warren.stop()
        finally:
            warren.kill()
        results[label] = {
            "queues": n_queues, "messages": n_queues * per_queue, "prefetch": prefetch,
            "consumers_up_s": round(consumers_up, 3), "cpu_s_total": cpu,
            "rss_consumers_up_mib": before.get("VmRSS", 0) / MIB, "threads_consumers_up": before.get("Threads"),
            "hwm_mib": after.get("VmHWM", 0) / MIB, "rss_after_mib": after.get("VmRSS", 0) / MIB,
            "threads_after": after.get("Threads"), "idle_rss_mib": idle.get("VmRSS", 0) / MIB,
            "idle_threads": idle.get("Threads")}
        for queue in queues:
            h.purge(queue)
    rep.runs["scale"] = results
    sec = "scale"
    big = results["100 queues"]
    rep.add(sec, f"100 queues, prefetch 100, {s.scale_messages} msgs each: threads", hwm=big["hwm_mib"],
            value=big["threads_after"], value_text=f"{big['threads_after']} threads",
            notes=f"all 100 consumers up {big['consumers_up_s']:.2f} s after start, then "
                  f"{big['rss_consumers_up_mib']:.1f} MiB RSS and {big['threads_consumers_up']} threads; "
                  f"idle after drain {big['idle_rss_mib']:.1f} MiB")
    ten = results["10 queues"]
    rep.add(sec, f"10 queues, prefetch 1000, {s.rss_messages} msgs each: peak RSS", hwm=ten["hwm_mib"],
            value=ten["hwm_mib"], value_text=f"{ten['hwm_mib']:.1f} MiB", target="< 40 MiB",
            passed=ten["hwm_mib"] < 40,
            notes=f"{ten['threads_after']} threads; {ten['rss_consumers_up_mib']:.1f} MiB when consumers came up; "
                  f"idle after drain {ten['idle_rss_mib']:.1f} MiB")


def section_soak(h, rep):
    """soak_count messages through one queue while RSS is sampled every second: no growth."""
    s = h.s
    queue = h.new_queue("soak")
    config = h.warren_config("soak", [h.queue_entry(queue, 100)], {"h": {"kind": "noop"}})
    warren = h.spawn("soak-warren", [h.warren, "run", "--config", config])
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss = proc_status(warren.pid).get("VmRSS")
            if rss:
                samples.append((time.monotonic() - warren.started, rss))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        h.wait_consumers([queue], warren)
        sampler.start()
        started = time.monotonic()
        publisher = h.spawn("soak-publish", [h.publish_tool, h.url, queue, s.soak_count, s.body_size, s.window])
        if not publisher.poll_exit(3600) or publisher.exit_code != 0:
            raise RuntimeError(f"the soak publisher failed\n{publisher.tail()}")
        w = h.watch(warren, [queue])
        seconds = time.monotonic() - started
        cpu = proc_cpu(warren.pid)
        stop.set()
        sampler.join()
        status = proc_status(warren.pid)
        warren.stop()
    finally:
        stop.set()
        warren.kill()
    # Warm-up: the first 10% of the run (pools and buffers reach their working size).
    total_t = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0
    kept = [(t, rss) for t, rss in samples if t - samples[0][0] >= 0.1 * total_t]
    result = {"messages": s.soak_count, "seconds": round(seconds, 2), "rate": s.soak_count / seconds,
              "cpu_s_total": cpu, "hwm_mib": status.get("VmHWM", 0) / MIB, "samples": samples,
              "final_watch": w}
    if len(kept) >= 3:
        first = statistics.median(r for _, r in kept[:3]) / MIB
        mid = kept[len(kept) // 2][1] / MIB
        last = statistics.median(r for _, r in kept[-3:]) / MIB
        slope = statistics.linear_regression([t for t, _ in kept], [r / MIB for _, r in kept]).slope
        growth = last - first
        allowed = max(2.0, 0.05 * first)
        result.update({"start_mib": first, "mid_mib": mid, "end_mib": last, "slope_mib_per_min": slope * 60,
                       "growth_mib": growth, "allowed_growth_mib": allowed})
        passed = growth <= allowed and slope * (kept[-1][0] - kept[0][0]) <= allowed
        value_text = f"{first:.1f} -> {mid:.1f} -> {last:.1f} MiB"
        notes = f"slope {slope * 60:+.3f} MiB/min over {len(kept)} samples after 10% warm-up; allowed +{allowed:.1f} MiB"
    else:
        passed, value_text, notes = None, "", "too few RSS samples"
    rep.runs["soak"] = result
    rep.add("soak", f"{s.soak_count:,} msgs through one queue (publisher running alongside): RSS",
            rate=result["rate"], cpu=cpu * 100_000 / s.soak_count if cpu else None, hwm=result["hwm_mib"],
            value_text=value_text, target="flat", passed=passed, notes=notes)
