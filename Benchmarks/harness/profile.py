"""The profile section: perf on warren during a noop drain."""
import os
import re
import signal
import subprocess

from .util import descendants


def demangle(text):
    """Swift symbols made readable (swift demangle --simplified), if the toolchain has it."""
    try:
        return subprocess.run(["swift", "demangle", "--simplified"], input=text, capture_output=True, text=True,
                              check=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return text


def top_lines(text, n, marker):
    # perf pads every line to the width of its longest symbol and ends it with empty columns.
    lines = [re.sub(r"(\s+-)*\s*$", "", line) for line in text.splitlines() if marker(line)]
    return lines[:n]


def section_profile(h, rep):
    """perf (cpu-clock samples with call graphs) on warren during a noop drain: top 15 costs.

    Not callgrind: Valgrind 3.19 (Debian 12) cannot read the DWARF 5 of Swift's toolchain, and
    on a copy without debug info it crashed with an internal SIGSEGV as warren started threads.
    """
    s = h.s
    queue = h.new_queue("profile")
    config = h.warren_config("profile", [h.queue_entry(queue, 1000)], {"h": {"kind": "noop"}})
    count = s.profile_count
    h.prefill(queue, count)
    data = h.work / "perf.data"
    argv = ["perf", "record", "-e", "cpu-clock", "-F", "1999", "-g", "-o", data, "--",
            h.warren, "run", "--config", config]
    proc = h.spawn("profile-perf", argv)
    try:
        w = h.watch(proc, [queue], count, stall=300)
        # perf forks warren and exits when it does: stop warren itself.
        os.kill((descendants(proc.pid) or [proc.pid])[0], signal.SIGTERM)
        if not proc.poll_exit(300):
            raise RuntimeError(f"perf did not finish\n{proc.tail()}")
    finally:
        proc.kill()

    def report(children, sort="dso,symbol", only_warren=False):
        argv = ["perf", "report", "-i", data, "--stdio", "--sort", sort, "-g", "none",
                "--children" if children else "--no-children", "--percent-limit", "0.2"]
        out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600).stdout
        return top_lines(demangle(out), 15, lambda line: "%" in line and not line.startswith("#")
                         and (not only_warren or " warren " in line))

    result = {"messages": count, "rate_under_profiler": w["count_at_start"] / (w["end"] - w["start"]),
              "by_dso": report(False, "dso"), "self": report(False), "inclusive": report(True),
              "inclusive_warren": report(True, only_warren=True)}
    rep.runs["profile"] = {"perf": result}
    rep.add("profile", f"perf: warren noop drain, prefetch 1000, batched, {count} msgs",
            rate=result["rate_under_profiler"], notes="top costs printed below and in the JSON (runs.profile)")
