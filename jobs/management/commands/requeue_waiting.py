import json

from django.core.management.base import BaseCommand

from jobs.lifecycle import requeue_waiting


class Command(BaseCommand):
    help = (
        "Queue again the jobs (imports, snapshot builds, training jobs, online runs, eval runs) whose task "
        "could not be sent because the task queue (broker) was unreachable. Safe to run at any time (cron)."
    )

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(requeue_waiting()))
