from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Evaluation"

    def ready(self):
        # imported here: models can be imported only once the app registry is ready
        from training import hooks

        from . import tasks  # noqa: F401 - registers the eval run job kind (jobs.registry)
        from .runner import evaluate_after_training

        hooks.on_version_trained(evaluate_after_training)
