from django.apps import AppConfig


class AnnotatorConfig(AppConfig):
    name = "annotator"
    verbose_name = "Annotation"

    def ready(self):
        from . import tasks  # noqa: F401 - registers the import job kind (jobs.registry)
        from .rollups import signals

        signals.connect()  # the handlers that keep the dashboard roll-ups current on every write
