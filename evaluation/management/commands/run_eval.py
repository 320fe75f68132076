r"""Evaluate a model version on a suite from the command line.

python manage.py run_eval sales-agent demo-base --suite 3            # queue it on the eval worker
python manage.py run_eval sales-agent demo-base --suite 3 --now      # run here, print the summary
python manage.py run_eval sales-agent agent-v3 --suite 3 --outputs outputs.jsonl --now
python manage.py run_eval sales-agent qwen3-8b --suite 3 \
    --endpoint http://gpu-1:8000/v1 --endpoint-model qwen3-8b
"""

import json

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from annotator.models import ModelVersion, Project
from evaluation import runner
from evaluation.models import EvalRun, EvalSettings, EvalSuite
from toolcalls.score import HEADLINE_METRICS


class Command(BaseCommand):
    help = "Run a model version on an eval suite (local model, endpoint or an outputs file)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("model_version", help="model version name")
        parser.add_argument("--suite", type=int, help="suite id (default: the project's default suite)")
        parser.add_argument(
            "--outputs", metavar="FILE", help="score this outputs JSONL instead of generating"
        )
        parser.add_argument("--endpoint", metavar="URL", help="OpenAI-compatible base URL")
        parser.add_argument("--endpoint-model", default="")
        parser.add_argument("--max-new-tokens", type=int)
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--device", default="auto")
        parser.add_argument("--now", action="store_true", help="run in this process instead of queueing")

    def handle(self, *args, **o):
        project = Project.objects.filter(slug=o["project"]).first()
        if project is None:
            raise CommandError(f"no project {o['project']!r}")
        mv = ModelVersion.objects.filter(project=project, name=o["model_version"]).first()
        if mv is None:
            raise CommandError(f"no model version {o['model_version']!r} in {project.slug}")
        suite = (
            EvalSuite.objects.filter(project=project, pk=o["suite"]).first()
            if o["suite"]
            else EvalSettings.for_project(project).default_suite
        )
        if suite is None:
            raise CommandError("no such suite (and no default suite): pass --suite ID")
        settings = {k: o[k] for k in ("max_new_tokens", "batch_size", "device") if o.get(k)}
        source, outputs = EvalRun.Source.LOCAL, None
        if o["outputs"]:
            source, outputs = EvalRun.Source.OUTPUTS, File(open(o["outputs"], "rb"), name=o["outputs"])  # noqa: SIM115
        elif o["endpoint"]:
            source = EvalRun.Source.ENDPOINT
            settings.update(base_url=o["endpoint"], model=o["endpoint_model"] or mv.name)
        try:
            run = runner.create_run(
                project,
                suite,
                mv,
                source=source,
                settings=settings,
                outputs=outputs,
                trigger=EvalRun.Trigger.COMMAND,
                start=not o["now"],
            )
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        finally:
            if outputs is not None:
                outputs.close()
        if not o["now"]:
            self.stdout.write(f"run {run.pk} queued on the eval queue")
            return
        run = runner.run_eval(run.pk)
        self.stdout.write(f"run {run.pk}: {run.status}. {run.message}")
        if run.summary:
            self.stdout.write(json.dumps({m: run.summary[m] for m in HEADLINE_METRICS}, indent=2))
        if run.status != EvalRun.State.DONE:
            raise CommandError(run.message)
