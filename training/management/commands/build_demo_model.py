import json
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Build the offline demo base model (tokenizer + tiny Qwen3) under MODEL_DIR, unless already built."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--force", action="store_true", help="rebuild even if a build with this seed exists"
        )
        parser.add_argument("--out", default=None, help="folder (default MODEL_DIR/demo-base)")

    def handle(self, *args, **opts):
        from training.demo_model import build_demo_model

        out = Path(opts["out"] or Path(settings.MODEL_DIR) / "demo-base")
        start = time.perf_counter()
        info = build_demo_model(str(out), seed=opts["seed"], force=opts["force"], log=self.stdout.write)
        took = time.perf_counter() - start
        self.stdout.write(f"demo model ready in {out} ({took:.1f}s this run)")
        self.stdout.write(json.dumps(info, default=str)[:500])
