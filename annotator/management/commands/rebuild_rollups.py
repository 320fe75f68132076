"""Recompute the dashboard roll-ups from scratch: after an upgrade, a bulk load that bypassed the ORM, or a
repair."""

import time

from django.core.management.base import BaseCommand, CommandError

from annotator.models import Project
from annotator.rollups.store import rebuild


class Command(BaseCommand):
    help = "Recompute the dashboard roll-up tables from labels, reviews and preferences."

    def add_arguments(self, parser):
        parser.add_argument("--project", help="project slug (default: every project)")

    def handle(self, *args, **options):
        projects = Project.objects.all()
        if options["project"]:
            projects = projects.filter(slug=options["project"])
            if not projects.exists():
                raise CommandError(f"No project {options['project']!r}.")
        for project in projects.order_by("pk"):
            started = time.perf_counter()
            rows = rebuild(project)
            summary = ", ".join(f"{name} {n}" for name, n in sorted(rows.items())) or "no rows"
            self.stdout.write(f"{project.slug}: {summary} ({time.perf_counter() - started:.1f} s)")
