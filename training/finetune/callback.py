"""The TRL callback that writes metric points and checkpoints to the database; its heartbeat is
where a cancel is noticed, and every checkpoint passes the guard.

In a job of several processes every rank has one, and only rank 0's writes (`main`); what rank 0
decides (stop for a cancel, stop for the guard) reaches every rank through group.agree at the same
step, so they all stop together."""

import math
import time
from pathlib import Path

from jobs import lifecycle

from ..models import Checkpoint, MetricPoint, TrainingJob
from .group import agree, is_main
from .guard import Guard


def _numbers(logs: dict) -> dict:
    return {
        k: float(v)
        for k, v in (logs or {}).items()
        if isinstance(v, (int, float)) and math.isfinite(float(v))
    }


def make_callback(job: TrainingJob, guard: Guard | None):
    """The job's callback in this process: it writes when this is rank 0 (or the only process); another
    rank only follows rank 0's decisions (and has no guard)."""
    from transformers import TrainerCallback

    main = is_main()

    class JobCallback(TrainerCallback):
        """Metric points, heartbeat and cancel checks every step; guard check at every checkpoint."""

        def __init__(self):
            self.cancelled = False
            self.tripped: dict | None = None
            self._beat = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            if main:
                lifecycle.heartbeat(job, max_steps=state.max_steps, step=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            values = _numbers(logs)  # the same on every rank: the trainer averages them over the ranks
            if not values or not main:
                return
            MetricPoint.objects.create(job=job, step=state.global_step, epoch=state.epoch, values=values)
            shown = ", ".join(
                f"{k} {v:.4g}"
                for k, v in values.items()
                if k
                in (
                    "loss",
                    "learning_rate",
                    "grad_norm",
                    "eval_loss",
                    "rewards/margins",
                    "rewards/accuracies",
                )
            )
            if shown:
                lifecycle.log(job, f"step {state.global_step}: {shown}")

        def on_step_end(self, args, state, control, **kwargs):
            stop = save = False
            now = time.monotonic()
            if main and now - self._beat >= 1.0:
                self._beat = now
                if not lifecycle.heartbeat(job, step=state.global_step):  # cancelled, or taken over
                    stop, save = True, job.cancel_requested  # keep the last checkpoint when it is still ours
            stop, save = agree(stop, save)
            if stop:
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = save
                if main:
                    lifecycle.log(job, f"cancel requested: stopping at step {state.global_step}")

        def on_save(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            result = None
            if main:
                path = str(Path(args.output_dir) / f"checkpoint-{step}")
                result = guard.check(model, step)
                lifecycle.heartbeat(job)
                Checkpoint.objects.update_or_create(
                    job=job, step=step, defaults={"path": path, "healthy": result["ok"], "guard": result}
                )
                lifecycle.log(
                    job,
                    f"checkpoint {step}: perplexity x{result['perplexity_ratio']:.2f}, "
                    f"quality {100 * result['quality']:.0f}% — {'healthy' if result['ok'] else 'TRIPPED'}",
                )
            (tripped,) = agree(result is not None and not result["ok"])
            if tripped and self.tripped is None:
                self.tripped = result or {"step": step}
                control.should_training_stop = True

    return JobCallback()
