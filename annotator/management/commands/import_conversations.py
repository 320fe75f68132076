import json
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from annotator.importers import answers_upload_error, run_import
from annotator.models import ImportJob, Project, Split
from jobs import lifecycle


class Command(BaseCommand):
    help = "Import a JSONL file of conversations into a project (in this process, or queued with --queue)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("path", help="JSONL file")
        parser.add_argument("--split", default=Split.TRAIN, choices=Split.values)
        parser.add_argument(
            "--dialect",
            default=ImportJob.Dialect.AUTO,
            choices=ImportJob.Dialect.values,
            help="auto: each line's shape decides; openai: conversations and chat-completion logs; "
            "bfcl: BFCL test records",
        )
        parser.add_argument("--answers", metavar="FILE", help="BFCL possible answers for the test file")
        parser.add_argument("--queue", action="store_true", help="hand the job to a Celery worker and return")
        parser.add_argument("--show-issues", type=int, default=20, help="print the first N rejected lines")

    def handle(self, *args, **opts):
        try:
            project = Project.objects.get(slug=opts["project"])
        except Project.DoesNotExist as exc:
            raise CommandError(f"No project with slug {opts['project']!r}.") from exc
        path = Path(opts["path"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        answers = Path(opts["answers"]) if opts["answers"] else None
        if answers is not None and not answers.is_file():
            raise CommandError(f"No such file: {answers}")
        job = ImportJob(
            project=project,
            original_name=path.name[:255],
            size_bytes=path.stat().st_size,
            default_split=opts["split"],
            dialect=opts["dialect"],
        )
        if answers is not None:
            with answers.open("rb") as fh:
                problem = answers_upload_error(fh, opts["dialect"])
                if problem:
                    raise CommandError(f"{answers}: {problem}")
                job.answers_file.save(answers.name, File(fh), save=False)
        with path.open("rb") as fh:
            job.file.save(path.name, File(fh), save=False)
        job.save()
        if opts["queue"]:
            lifecycle.enqueue(job)
            job.refresh_from_db()
            self.stdout.write(
                f"import {job.pk} {'waiting for the task queue' if job.waiting_for_queue else 'queued'}"
            )
            return
        job = run_import(job.pk)
        for issue in job.issues.order_by("line", "id")[: opts["show_issues"]]:
            self.stderr.write(f"line {issue.line}: {issue.field or '(line)'}: {issue.message}")
        self.stdout.write(
            json.dumps(
                {
                    "job": job.pk,
                    "status": job.status,
                    "lines": job.lines_read,
                    "conversations": job.conversations_created,
                    "responses": job.responses_created,
                    "duplicates": job.duplicates,
                    "rejected_lines": job.error_count,
                    "message": job.message,
                }
            )
        )
        if job.status == ImportJob.State.FAILED:
            raise CommandError(job.message)
