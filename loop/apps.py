from django.apps import AppConfig


class LoopConfig(AppConfig):
    """The loop that ties the apps together: the demo world's seed, online DPO rounds, the demo loop."""

    name = "loop"
    verbose_name = "Improvement loop"

    def ready(self):
        # imported here: models can be imported only once the app registry is ready
        from training import hooks

        from . import tasks  # noqa: F401 - registers the online run job kind (jobs.registry)
        from .demo_lineage import continue_lineage

        hooks.on_version_trained(continue_lineage)  # the demo lineage's SFT job queues its DPO job
