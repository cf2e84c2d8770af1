"""Run a command (a whole `frft-ray run`) and check from `nvidia-smi` that every GPU role held GPU memory.

    python scripts/gpu_roles.py --roles learner,rollout,reward_trainer,embedder,serve -- frft-ray run ...

Every `--interval` seconds it reads `nvidia-smi --query-compute-apps=pid,used_memory` and names each
process by its Ray process title (`ray::LearnerActor...`, `ray::RolloutWorker...`); a role passes if
one of its processes was seen holding memory. Prints the peak MiB per role and exits non-zero if the
command failed or a role never showed up. Needs nvidia-smi and a PID namespace that shows the
processes it lists (where it does not, it says so instead of passing).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

# Ray sets each worker's process title to "ray::<Class>" (idle) or "ray::<Class>.<method>" (busy)
ROLE_TITLES = {
    "learner": ("LearnerActor",),
    "rollout": ("RolloutWorker",),
    "reward_trainer": ("RayTrainWorker", "RewardFitWorker", "TrainTrainable"),
    "embedder": ("EmbedderActor",),
    "serve": ("ServeReplica",),
}


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def role_of(title: str) -> str | None:
    if not title.startswith("ray::"):
        return None
    for role, names in ROLE_TITLES.items():
        if any(title.startswith(f"ray::{n}") or f":{n}" in title for n in names):
            return role
    return None


def sample(peaks: dict, unknown: dict) -> None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        unknown["nvidia-smi"] = (0.0, f"not readable: {e}")
        return
    for line in out.strip().splitlines():
        pid_s, mem_s = (x.strip() for x in line.split(","))
        if not pid_s.isdigit():
            continue
        title = process_title(int(pid_s))
        mem = float(mem_s) if mem_s.replace(".", "").isdigit() else 0.0
        role = role_of(title)
        if role:
            peaks[role] = max(peaks.get(role, 0.0), mem)
        else:
            unknown[pid_s] = max(unknown.get(pid_s, 0.0), mem), title[:80] or "<not visible here>"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--roles", default=",".join(ROLE_TITLES), help="roles that must hold GPU memory")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("give the command after --")
    peaks: dict[str, float] = {}
    unknown: dict[str, tuple] = {}
    done = threading.Event()

    def loop():
        while not done.wait(a.interval):
            sample(peaks, unknown)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    done.set()
    t.join()
    print(f"gpu_roles: command exit {rc} after {time.perf_counter() - t0:.0f} s")
    missing = []
    for role in a.roles.split(","):
        mib = peaks.get(role)
        print(f"gpu_roles: {role:15s} {'peak %.0f MiB' % mib if mib else 'NOT SEEN on the GPU'}")
        if not mib:
            missing.append(role)
    for pid, (mib, title) in sorted(unknown.items()):
        print(f"gpu_roles: other process {pid}: {mib:.0f} MiB {title}")
    if missing and unknown and all(title == "<not visible here>" for _, title in unknown.values()):
        print("gpu_roles: nvidia-smi lists PIDs this namespace cannot see; roles cannot be told apart here")
    ok = rc == 0 and not missing
    print("gpu_roles:", "PASS" if ok else f"FAIL (missing: {', '.join(missing) or '-'}, exit {rc})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
