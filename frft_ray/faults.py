"""What a run does when one of its Ray roles dies (kept light: the CLI imports it on every command).

Rollout workers come back on their own (actors/rollout_pool.py restarts them and re-sends the weights).
The learner and the RM trainer hold state no other process has (optimizer moments, the process group),
so their death stops the run with `RoleDiedError`, naming the role and how to continue: the run folder's
last complete iteration is intact (checkpoints and `latest` are written to a temporary name, then renamed),
and `frft-ray run --resume RUN_DIR` goes on from there.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "FRFT_RAY_TEST_KILL_AT"

class RoleDiedError(RuntimeError):
    """A role of the run died and was not replaced; the message says which and how to resume."""

    def __init__(self, role: str, detail: str, run_dir: str | None = None):
        self.role, self.detail, self.run_dir = role, detail, run_dir
        msg = f"{role} lost: {detail}. The run stopped"
        if run_dir is not None:
            msg += f"; continue it after its last complete iteration with: frft-ray run --resume {run_dir}"
        super().__init__(msg)

    def __reduce__(self):  # keeps the (role, detail, run_dir) signature through pickling
        return (RoleDiedError, (self.role, self.detail, self.run_dir))

    def in_run(self, run_dir) -> "RoleDiedError":
        """The same error, naming the run folder to resume."""
        return RoleDiedError(self.role, self.detail, str(run_dir))


def first_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def kill_point(name: str) -> None:
    """A test hook: the driver SIGKILLs itself here when FRFT_RAY_TEST_KILL_AT equals `name`.

    The points are `refit:<iteration>` (the RM refit has written its checkpoint, nothing else of the
    iteration has) and `ppo:<iteration>:<step>` (after that PPO step's update and weight sync, before
    the iteration's checkpoint). tests/test_driver_crash.py uses them to crash a real `frft-ray run`
    at a known place, as `kill -9` from outside would, and then resumes it."""
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
