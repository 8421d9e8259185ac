"""A process started by the harness."""
import os
import signal
import subprocess
import time
from pathlib import Path

from .util import proc_status


class Proc:
    """A process we started, in its own session so that its children can be stopped with it."""

    def __init__(self, name, argv, log_path, env=None, stdout=None):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [str(a) for a in argv], stdout=stdout if stdout is not None else self.log_file,
            stderr=self.log_file, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pid = self.popen.pid
        self.exit_code = None
        self.rusage = None
        self.ended = None
        # VmHWM as last seen while waiting. Not ru_maxrss: that counts the forked copy of this
        # Python process before exec, about 20 MiB, more than the C tools ever use.
        self.hwm_kib = 0

    def poll_exit(self, timeout):
        """Waits up to timeout for the process to exit by itself; keeps its rusage."""
        deadline = time.monotonic() + timeout
        while True:
            self.hwm_kib = max(self.hwm_kib, proc_status(self.pid).get("VmHWM", 0))
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.ended = time.monotonic()
                self.exit_code = os.waitstatus_to_exitcode(status)
                self.rusage = rusage
                self.popen.returncode = self.exit_code
                self.log_file.close()
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def stop(self, timeout=60):
        """SIGTERM (warren's graceful stop), SIGKILL to the whole group if it does not exit."""
        if self.exit_code is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self.poll_exit(timeout):
                self.kill()
        return self.exit_code

    def kill(self):
        if self.exit_code is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.poll_exit(10)

    def tail(self, lines=8):
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
