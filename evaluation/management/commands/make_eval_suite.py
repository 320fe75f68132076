"""Build an eval suite from the command line.

python manage.py make_eval_suite sales-agent "regression" --gold cases.jsonl
python manage.py make_eval_suite sales-agent "multi-turn" --scenarios scripted.jsonl
python manage.py make_eval_suite sales-agent "held-out" --snapshot 12
python manage.py make_eval_suite sales-agent "demo held-out" --demo 200 --seed 0 [--default]
"""

from django.core.management.base import BaseCommand, CommandError

from annotator.models import Project
from evaluation import suites
from evaluation.models import EvalSettings


class Command(BaseCommand):
    help = "Build the next version of an eval suite (gold JSONL, scenarios, an eval snapshot or demo cases)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("name")
        src = parser.add_mutually_exclusive_group(required=True)
        src.add_argument("--gold", metavar="FILE")
        src.add_argument("--scenarios", metavar="FILE")
        src.add_argument("--snapshot", type=int, metavar="ID")
        src.add_argument(
            "--conversations", action="store_true", help="the project's eval/holdout conversations"
        )
        src.add_argument("--demo", type=int, metavar="N", help="N held-out demo-domain cases")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--split", choices=["seen", "unseen"], default="seen")
        parser.add_argument("--description", default="")
        parser.add_argument("--default", action="store_true", help="make it the project's default suite")

    def handle(self, *args, **o):
        project = Project.objects.filter(slug=o["project"]).first()
        if project is None:
            raise CommandError(f"no project {o['project']!r}")
        kw = {"description": o["description"]}
        try:
            if o["gold"]:
                with open(o["gold"], "rb") as fh:
                    suite, created = suites.suite_from_gold_jsonl(
                        project, o["name"], fh, file_name=o["gold"], **kw
                    )
            elif o["scenarios"]:
                with open(o["scenarios"], "rb") as fh:
                    suite, created = suites.suite_from_scenarios(
                        project, o["name"], fh, file_name=o["scenarios"], **kw
                    )
            elif o["snapshot"]:
                snap = next((s for s in suites.eval_snapshots(project) if s.pk == o["snapshot"]), None)
                if snap is None:
                    raise CommandError(f"no ready eval snapshot {o['snapshot']} in {project.slug}")
                suite, created = suites.suite_from_snapshot(project, snap, o["name"], **kw)
            elif o["conversations"]:
                suite, created = suites.suite_from_conversations(project, o["name"], **kw)
            else:
                suite, created = suites.suite_from_demo(
                    project, o["name"], n=o["demo"], seed=o["seed"], split=o["split"], **kw
                )
        except suites.SuiteError as exc:
            for e in exc.errors:
                self.stderr.write(str(e))
            raise CommandError(f"suite not created: {len(exc.errors)} problem(s)") from None
        except OSError as exc:
            raise CommandError(str(exc)) from None
        if o["default"]:
            cfg = EvalSettings.for_project(project)
            cfg.default_suite = suite
            cfg.save(update_fields=["default_suite", "updated_at"])
        verb = "created" if created else "unchanged (same cases as the latest version)"
        self.stdout.write(f"{suite.label} {verb}: {suite.case_count} cases (id {suite.pk})")
