from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Datasets and training"

    def ready(self):
        # imported here: models can be imported only once the app registry is ready
        from annotator import hints

        from . import tasks  # noqa: F401 - tasks registers the snapshot and training job kinds
        from .judge.suggestions import suggestions_for, verdict_suggestions_for

        hints.register(suggestions_for, verdict_suggestions_for)
