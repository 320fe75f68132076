import json

from django.core.management.base import BaseCommand

from config.queueing import requeue_waiting


class Command(BaseCommand):
    help = ("Queue again the imports, snapshot builds, training jobs and eval runs that failed because the task "
            "queue (broker) was unreachable when they were created. Safe to run at any time (e.g. from cron).")

    def handle(self, *args, **options):
        counts = requeue_waiting()
        self.stdout.write(json.dumps(counts))
        return None
