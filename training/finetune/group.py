"""One training job over several processes: distributed data parallel, started by the training worker
as one process group and supervised by it until the group ends.

The worker that claimed the job (run.run_job) starts `python -m training.finetune.worker_main` in a new
session; that process runs torchrun, which starts `num_processes` ranks of the same module (gloo on a
CPU, nccl on GPUs: one rank per GPU). Every rank runs the job's trainer (run.train_rank): TRL and
transformers do the data parallelism from torchrun's environment. Rank 0 alone writes: metric points,
progress, log lines, checkpoints, the result. What one rank decides for all (rank 0 reads the cancel
flag and runs the guard) reaches the others through `agree`, so every rank stops at the same step.

Ending the group: a cancel or a tripped guard stops every rank at the same step (rank 0 saves the
checkpoint); the worker kills the whole group when the job is taken over, when a stop is not honoured
within STOP_GRACE_S, or when the worker itself fails. Each process of the group dies with its parent
(worker_main.die_with_parent), so a SIGKILLed worker takes its launcher and ranks with it and the job
is reaped and resumed as any other: the ranks continue from the last checkpoint.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError

from jobs import lifecycle

from ..models import TrainingJob
from .worker_main import SUPERVISOR_PID_ENV

STOP_GRACE_S = 60.0  # how long a cancelled or stopped group may take to save and exit before it is killed
# after rank 0 marked the job succeeded it still works (a judge's held-out evaluation, the hooks): a
# success is given this long to finish before the group is killed
AFTER_SUCCESS_S = 3600.0
LOG_NAME = "processes.log"  # the group's own output (tracebacks), in the job's output folder

logger = logging.getLogger(__name__)


# --- inside a rank ----------------------------------------------------------------------------


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """The rank that writes (the only one when the job runs in one process)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _initialised():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def agree(*flags: bool) -> list[bool]:
    """Each flag OR-ed over the ranks (one small all-reduce; the flags as given in one process). Every rank
    calls it at the same point of the same step."""
    dist = _initialised()
    if dist is None:
        return [bool(f) for f in flags]
    import torch

    device = f"cuda:{torch.cuda.current_device()}" if "nccl" in str(dist.get_backend()) else "cpu"
    values = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def pids() -> list[int]:
    """Every rank's pid, in rank order (a collective: every rank calls it)."""
    dist = _initialised()
    if dist is None:
        return [os.getpid()]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, os.getpid())
    return gathered


# --- the worker's side ------------------------------------------------------------------------


def processes_problem(n: int, device: str) -> str:
    """Why this worker cannot run `n` processes ("" when it can): on GPUs, one per visible GPU."""
    if device.startswith("cuda"):
        import torch

        visible = torch.cuda.device_count()
        if n > visible:
            return (
                f"num_processes is {n}, but this worker sees {visible} GPU{'s' if visible != 1 else ''} "
                "(one process per GPU): lower num_processes, or route the job to a host with more GPUs."
            )
    return ""


def run_group(job: TrainingJob, n: int) -> None:
    """Start the job's `n` processes and wait for them, watching the row. The ranks write everything;
    this writes only what a group that ended without its last write could not: why."""
    out = Path(job.output_dir)
    env = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "training.finetune.worker_main", str(job.pk), job.run_token, str(n)]
    with open(out / LOG_NAME, "ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg ends the launcher, the ranks follow
        )
    token, killed = job.run_token, ""
    try:
        killed = _watch(job, proc)
    finally:
        if proc.poll() is None:  # the worker is failing or shutting down: the group goes with it
            _kill(proc)
    job.refresh_from_db()
    if job.status != TrainingJob.State.RUNNING or job.run_token != token:
        return  # rank 0 wrote the end, or another attempt owns the job
    why = killed or f"the training processes exited with code {proc.returncode}"
    error = last_error(out / LOG_NAME)
    lifecycle.log(job, why + (f": {error}" if error else ""))
    if job.cancel_requested:
        lifecycle.finish(job, TrainingJob.State.CANCELLED, f"Cancelled: {why}. {job.resume_hint}")
    else:
        lifecycle.finish(
            job,
            TrainingJob.State.FAILED,
            why[0].upper() + why[1:] + (f": {error}" if error else "") + f". {job.resume_hint}",
        )


def _watch(job: TrainingJob, proc: subprocess.Popen) -> str:
    """Wait for the group; kill it when the job is no longer this attempt's, or when a stop (a cancel, or
    rank 0's last write) is not followed by the group's exit within STOP_GRACE_S. Returns why it killed
    the group ("" when it exited by itself)."""
    stopping_since = None
    while True:
        try:
            proc.wait(timeout=1.0)
            return ""
        except subprocess.TimeoutExpired:
            pass
        try:
            row = (
                TrainingJob.objects.filter(pk=job.pk)
                .values_list("status", "run_token", "cancel_requested")
                .first()
            )
        except DatabaseError as exc:  # rank 0 meets the same outage and decides: not a reason to kill
            logger.warning("training job %s: could not read its row: %s", job.pk, exc)
            continue
        if row is None or row[1] != job.run_token:
            _kill(proc)
            return "another attempt owns the job now: the processes were stopped"
        status, _, cancel = row
        if status == TrainingJob.State.RUNNING and not cancel:
            continue
        stopping_since = stopping_since or time.monotonic()
        grace = AFTER_SUCCESS_S if status == TrainingJob.State.SUCCEEDED and not cancel else STOP_GRACE_S
        if time.monotonic() - stopping_since > grace:
            _kill(proc)
            return f"the training processes did not stop within {grace:.0f}s and were killed"


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's process group; each rank dies with the launcher (die_with_parent)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def last_error(log: Path, tail_bytes: int = 20000) -> str:
    """The last exception line a rank printed (its type and message), for the job's message."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, log.stat().st_size - tail_bytes))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        text = line.split("]:", 1)[-1].strip() if line.startswith("[rank") else line.strip()
        head = text.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return text[:300]
    return ""
