from django.apps import AppConfig


class LoopConfig(AppConfig):
    """The loop that ties the apps together: the demo world's seed, online DPO rounds, the demo loop."""

    name = "loop"
    verbose_name = "Improvement loop"
