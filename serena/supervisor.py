"""A small process supervisor for `serena up`: start each process, restart on crash, stop cleanly.

Each process is a separate OS process (as in production, where each scales on its own);
one supervisor keeps them running on a single machine. Ctrl-C or SIGTERM stops all of them
with SIGTERM, then SIGKILL after a grace period. A process that keeps crashing is restarted
with exponential backoff (capped) so a bad dependency does not spin the CPU.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

logger = logging.getLogger("serena.supervisor")


@dataclass
class Spec:
    name: str
    argv: list[str]
    restart: bool = True  # False for jobs that end by themselves (the simulator): not restarted, the rest runs on
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Running:
    spec: Spec
    proc: subprocess.Popen
    started_at: float
    failures: int = 0
    next_start: float = 0.0


class Supervisor:
    def __init__(self, specs: list[Spec], *, grace_s: float = 10.0) -> None:
        self.specs = specs
        self.grace_s = grace_s
        self.running: dict[str, _Running] = {}
        self._stopping = False

    def _start(self, spec: Spec, failures: int = 0) -> None:
        env = {**os.environ, **spec.env}
        proc = subprocess.Popen(spec.argv, env=env, start_new_session=True)
        self.running[spec.name] = _Running(spec, proc, time.monotonic(), failures)
        logger.info("started %s (pid %d): %s", spec.name, proc.pid, " ".join(spec.argv))

    def _on_signal(self, signum, frame) -> None:
        self._stopping = True

    def run(self) -> int:
        """Run until Ctrl-C/SIGTERM; returns the first non-zero exit code of a one-shot process, else 0."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for spec in self.specs:
            self._start(spec)
        exit_code = 0
        try:
            while not self._stopping:
                time.sleep(0.2)
                now = time.monotonic()
                for name, r in list(self.running.items()):
                    code = r.proc.poll()
                    if code is None:
                        continue
                    if not r.spec.restart:
                        if r.next_start != -1.0:  # report once; the platform keeps running for people to look at
                            logger.info("%s finished with exit code %d; the rest keeps running (Ctrl-C stops it)", name, code)
                            exit_code = exit_code or code
                            r.next_start = -1.0
                        continue
                    if r.next_start == 0.0:
                        uptime = now - r.started_at
                        failures = 0 if uptime > 60 else r.failures + 1
                        delay = min(30.0, 0.5 * 2 ** failures)
                        logger.warning("%s exited with code %d after %.1f s; restarting in %.1f s", name, code, uptime, delay)
                        r.failures, r.next_start = failures, now + delay
                    elif now >= r.next_start:
                        self._start(r.spec, r.failures)
        finally:
            self.stop()
        return exit_code

    def stop(self) -> None:
        for r in self.running.values():
            if r.proc.poll() is None:
                try:
                    os.killpg(r.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.grace_s
        for name, r in self.running.items():
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it", name, self.grace_s)
                try:
                    os.killpg(r.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                r.proc.wait()
        logger.info("all processes stopped")


def python_module(*args: str) -> list[str]:
    """argv that runs `python -m ...` with this interpreter."""
    return [sys.executable, "-m", *args]
