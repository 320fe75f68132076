from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Datasets and training"

    def ready(self):
        # imported here: models can be imported only once the app registry is ready
        from annotator import hints

        from . import judging, tasks  # noqa: F401 - tasks registers the snapshot, training and online job kinds

        hints.register(judging.suggestions_for, judging.verdict_suggestions_for)
