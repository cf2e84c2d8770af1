"""The processes of one session (a `frft-ray` subprocess started with `start_new_session=True`, and the
Ray it started): found by session id, so a test can check that none outlives the command and kill
survivors by PID (never by name: other Ray instances share this machine)."""

import os
import signal
import time
from pathlib import Path

# Ray 2.60's node agents outlive a SIGKILLed driver: when their raylet dies they try to report it to
# the GCS, dead too, and hang there (ray/_private/process_watcher.py). Raylet, GCS and workers do die.
# A killed driver can do nothing about it; tests kill the agents by PID and tolerate only them.
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def session_processes(sid: int, wait_s: float) -> dict[int, str]:
    """{pid: command line} of the processes whose session is `sid`, waiting up to `wait_s` for them
    to exit on their own (no longer once only the hanging node agents are left)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: the session id
                    found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # it exited meanwhile
                continue
        if all(name.startswith(RAY_AGENTS) for name in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def reap_session(sid: int, wait_s: float = 15) -> dict[int, str]:
    """Wait up to `wait_s` for session `sid`'s processes to exit, SIGKILL the rest; return the survivors
    other than the node agents ({pid: command line}: what outlived the session's leader)."""
    survivors = session_processes(sid, wait_s)
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {pid: name for pid, name in survivors.items() if not name.startswith(RAY_AGENTS)}
