"""The entry point of a training job that runs in several processes (training/finetune/group.py):

    python -m training.finetune.worker_main <job id> <run token> <num processes>

The training worker starts it in a new session. Started by the worker, it is the launcher: it runs
torchrun in this process, which starts one rank per process from this same module, with torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Started by torchrun, it is a rank: it sets
up Django and runs the job's trainer (run.train_rank), rank 0 writing for all.

Each process dies with its parent (die_with_parent): a worker SIGKILLed takes the launcher with it, a
launcher killed takes its ranks (torchrun starts each rank in a session of its own, out of reach of a
kill of the launcher's process group).
"""

import os
import signal
import sys

SUPERVISOR_PID_ENV = "TRAINING_SUPERVISOR_PID"  # the worker's pid: the launcher's parent
LAUNCHER_PID_ENV = "TRAINING_LAUNCHER_PID"  # the launcher's pid: each rank's parent
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent ends (Linux prctl; elsewhere a thread watches the parent's
    pid). Exits at once when the parent has already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        import threading
        import time

        def watch():
            while os.getppid() == parent:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True, name="die-with-parent").start()
    if os.getppid() != parent:  # it ended before the line above took effect
        os.kill(os.getpid(), signal.SIGKILL)


def launch(job_id: str, token: str, processes: int) -> int:
    die_with_parent(int(os.environ[SUPERVISOR_PID_ENV]))
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    from torch.distributed.run import main as torchrun

    torchrun(
        [
            "--standalone",  # a rendezvous on a free local port: several jobs on one host never meet
            f"--nproc-per-node={processes}",
            "--max-restarts=0",  # a failed rank fails the attempt; the job resumes from its checkpoint
            "--monitor-interval=0.5",
            "--module",
            "training.finetune.worker_main",
            job_id,
            token,
            str(processes),
        ]
    )
    return 0


def rank_main(job_id: str, token: str) -> int:
    die_with_parent(int(os.environ[LAUNCHER_PID_ENV]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from training.finetune.run import train_rank

    return train_rank(int(job_id), token)


def main(argv: list[str]) -> int:
    job_id, token, processes = argv
    if LAUNCHER_PID_ENV in os.environ:
        return rank_main(job_id, token)
    return launch(job_id, token, int(processes))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
