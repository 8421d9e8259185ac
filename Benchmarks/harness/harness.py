"""The harness: builds the tools, creates and removes queues, starts and times processes."""
import json
import os
import re
import subprocess
from pathlib import Path

from .proc import Proc
from .util import MIB, ROOT, log, toml_value


class Harness:
    """Tools, queues and processes of one invocation; everything it creates it also removes."""

    def __init__(self, settings, work):
        self.s = settings
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.url = settings.url
        # amqp_parse_url (librabbitmq, so amqp-consume too) reads a trailing "/" as the vhost "".
        self.tools_url = re.sub(r"^(amqps?://[^/]+)/$", r"\1", self.url)
        self.queues = []
        self.procs = []
        self.seq = 0
        self.bin = None
        self.warren = None
        self.body_file = work / "body"
        self.body_file.write_bytes(b"x" * settings.body_size)

    # -- building ------------------------------------------------------------------------------

    def build(self, skip_setup, skip_build):
        if not skip_setup:
            subprocess.run([ROOT / "scripts/setup"], check=True, stdout=subprocess.DEVNULL)
        if not skip_build:
            log("swift build -c release --product warren")
            subprocess.run(["swift", "build", "-c", "release", "--product", "warren"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
        self.bin = Path(subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout.strip())
        self.warren = self.bin / "warren"
        if not self.warren.exists():
            raise SystemExit(f"no {self.warren}: build it (drop --skip-build)")
        tools = self.work / "bin"
        tools.mkdir(exist_ok=True)
        c_dir = ROOT / "Benchmarks/c"
        flags = ["-O2", "-Wall", "-Wextra", "-Werror", "-I", str(c_dir)]
        for name in ["bench-consume", "bench-publish", "bench-queue"]:
            subprocess.run(["cc", *flags, "-o", tools / name, c_dir / f"{name}.c", "-lrabbitmq"], check=True)
        subprocess.run(["cc", "-shared", "-fPIC", *flags, "-I", str(ROOT / "Sources/WarrenPlugin/include"), "-o",
                        tools / "libbench_plugin.so", c_dir / "bench_plugin.c"], check=True)
        self.consume_tool = tools / "bench-consume"
        self.publish_tool = tools / "bench-publish"
        self.queue_tool = tools / "bench-queue"
        self.plugin = tools / "libbench_plugin.so"

    # -- queues --------------------------------------------------------------------------------

    def tool(self, *argv, timeout=900):
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(str(argv[0])).name} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def new_queues(self, tag, n=1):
        names = []
        for _ in range(n):
            self.seq += 1
            names.append(f"bench.{tag}.{os.getpid()}.{self.seq}")
        self.queues.extend(names)
        for i in range(0, len(names), 50):
            self.tool(self.queue_tool, "declare", self.url, *names[i:i + 50])
        return names

    def new_queue(self, tag):
        return self.new_queues(tag)[0]

    def purge(self, queue):
        return int(self.tool(self.queue_tool, "purge", self.url, queue).split()[0])

    def prefill(self, queue, count):
        """count transient messages of body_size bytes, every one confirmed."""
        self.tool(self.publish_tool, self.url, queue, count, self.s.body_size, self.s.window)

    def cleanup(self):
        for proc in self.procs:
            proc.kill()
        for i in range(0, len(self.queues), 50):
            try:
                self.tool(self.queue_tool, "delete", self.url, *self.queues[i:i + 50])
            except Exception as error:  # noqa: BLE001 - best effort, the run is over
                log(f"cleanup: {error}")
        self.queues = []

    # -- processes -----------------------------------------------------------------------------

    def spawn(self, name, argv, env=None, stdout=None):
        self.seq += 1
        proc = Proc(name, argv, self.logs / f"{self.seq:03d}-{name}.log", env=env, stdout=stdout)
        self.procs.append(proc)
        return proc

    def watch(self, proc, queues, expect=None, stall=60):
        argv = [self.queue_tool, "watch", "-p", proc.pid if proc else 0, "-t", stall]
        if expect is not None:
            argv += ["-n", expect]
        done = subprocess.run([str(a) for a in argv + [self.url, *queues]], capture_output=True, text=True)
        if done.returncode != 0:
            detail = done.stdout.strip() or done.stderr.strip()
            tail = proc.tail() if proc else ""
            raise RuntimeError(f"watch failed: {detail}\n{tail}")
        return json.loads(done.stdout)

    def wait_consumers(self, queues, proc, n=1, timeout=120):
        """Until every queue has n consumers; fails at once if proc (the consumer) exits first."""
        for i in range(0, len(queues), 50):
            argv = [self.queue_tool, "wait-consumers", "-t", timeout, self.url, n, *queues[i:i + 50]]
            waiter = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)
            while waiter.poll() is None:
                if proc.poll_exit(0.02):
                    waiter.kill()
                    waiter.wait()
                    raise RuntimeError(f"{proc.name} exited {proc.exit_code} before consuming\n{proc.tail()}")
            if waiter.returncode != 0:
                raise RuntimeError(f"wait-consumers: {waiter.stderr.read().strip()}\n{proc.tail()}")

    @staticmethod
    def measurement(w, proc):
        count = w["count_at_start"]
        seconds = w["end"] - w["start"]
        cpu = w["cpu_end"] - w["cpu_start"] if w["cpu_start"] >= 0 and w["cpu_end"] >= 0 else None
        return {
            "count": count, "seconds": round(seconds, 4),
            "rate": count / seconds if seconds > 0 and count > 0 else None,
            "cpu_s": cpu, "cpu_per_100k": cpu * 100_000 / count if cpu is not None and count else None,
            "hwm_mib": w["hwm_kib"] / MIB if w["hwm_kib"] > 0 else None,
            "rss_mib": w["rss_kib"] / MIB if w["rss_kib"] > 0 else None, "threads": w["threads"],
            "startup_s": round(w["start"] - proc.started, 4) if proc else None,
            "children_cpu_s": w["children_cpu_end"] - w["children_cpu_start"],
        }

    def consume(self, name, argv, queues, expect, exits=False, stdout=None, probe=None, stall=60):
        """Starts a consumer, times the drain of queues, stops it (or waits for it to exit)."""
        proc = self.spawn(name, argv, stdout=stdout)
        try:
            w = self.watch(proc, queues, expect, stall)
            extra = probe(proc) if probe else {}
            if exits:
                if not proc.poll_exit(120):
                    raise RuntimeError(f"{name} did not exit after the drain\n{proc.tail()}")
            else:
                proc.stop()
        finally:
            proc.kill()
        m = self.measurement(w, proc)
        if proc.hwm_kib:
            # A consumer that exits by itself may be a zombie without VmHWM when the watch ends.
            m["hwm_mib"] = max(m["hwm_mib"] or 0, proc.hwm_kib / MIB)
        m.update(extra)
        m["exit_code"] = proc.exit_code
        if proc.exit_code not in (0, None):
            log(f"{name} exited {proc.exit_code}: {proc.tail(3)}")
        return m

    def run_to_exit(self, name, argv, count, timeout=900):
        """Times a process from spawn to exit (publishers); CPU and peak RSS from wait4."""
        proc = self.spawn(name, argv)
        try:
            if not proc.poll_exit(timeout):
                raise RuntimeError(f"{name} did not finish in {timeout} s")
        finally:
            proc.kill()
        if proc.exit_code != 0:
            raise RuntimeError(f"{name} exited {proc.exit_code}: {proc.tail()}")
        seconds = proc.ended - proc.started
        cpu = proc.rusage.ru_utime + proc.rusage.ru_stime
        return {"count": count, "seconds": round(seconds, 4), "rate": count / seconds, "cpu_s": round(cpu, 3),
                "cpu_per_100k": cpu * 100_000 / count, "hwm_mib": proc.hwm_kib / MIB or None,
                "output": Path(proc.log_path).read_text(errors="replace").strip()[-300:]}

    # -- warren --------------------------------------------------------------------------------

    def queue_entry(self, queue, prefetch, ack_mode="batched", concurrency=None, handler="h"):
        return {"name": queue, "declare": False, "durable": False, "retry": False, "dead_letter": "broker",
                "prefetch": prefetch, "concurrency": min(concurrency or self.s.concurrency, prefetch),
                "ack_mode": ack_mode, "handler": handler}

    def warren_config(self, name, queues, handlers, publisher=None):
        lines = ["[broker]", f"urls = [{json.dumps(self.url)}]", "", "[log]", 'level = "warning"', ""]
        lines += ["[publisher]", f"max_in_flight = {self.s.window}"]
        lines += [f"{k} = {toml_value(v)}" for k, v in (publisher or {}).items()] + [""]
        for queue in queues:
            lines += ["[[queues]]"] + [f"{k} = {toml_value(v)}" for k, v in queue.items()] + [""]
        for handler_name, handler in handlers.items():
            lines += [f"[handlers.{handler_name}]"] + [f"{k} = {toml_value(v)}" for k, v in handler.items()] + [""]
        # The cost of span export: WARREN_BENCH_TRACING="<endpoint>[,<sample_ratio>]" adds [tracing] to
        # every warren configuration (e.g. "http://127.0.0.1:9,0.01": a closed port, 1% sampled).
        tracing = os.environ.get("WARREN_BENCH_TRACING")
        if tracing:
            endpoint, _, ratio = tracing.partition(",")
            lines += ["[tracing]", f"endpoint = {json.dumps(endpoint)}"] + ([f"sample_ratio = {float(ratio)}"] if ratio else []) + [""]
        self.seq += 1
        path = self.work / f"{self.seq:03d}-{name}.toml"
        path.write_text("\n".join(lines))
        return path

    def warren_drain(self, name, queue, prefetch, count, handler, ack_mode="batched", concurrency=None, probe=None):
        config = self.warren_config(name, [self.queue_entry(queue, prefetch, ack_mode, concurrency)], {"h": handler})
        return self.consume(name, [self.warren, "run", "--config", config], [queue], count, probe=probe)

    def c_drain(self, name, queue, prefetch, count, mode):
        argv = [self.consume_tool, self.url, queue, prefetch, count]
        argv += ["each"] if mode == "each" else ["multiple", max(1, prefetch // 2)]
        return self.consume(name, argv, [queue], count, exits=True)
