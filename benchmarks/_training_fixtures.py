"""What the training benchmarks share: a project with a base model version and a ready SFT snapshot of demo
conversations. Import it after benchmarks._common.setup_django()."""

import json

from django.core.files.base import ContentFile

from annotator.models import ModelVersion, Project
from training import demo_domain
from training.models import DatasetSnapshot


def bench_project(slug: str, model: str, conversations: int = 400, seed: int = 11):
    """(project, base version, SFT snapshot in the trl_messages layout) for a throwaway benchmark project."""
    project = Project.objects.create(name=slug, slug=slug, tools=demo_domain.TOOLS)
    base = ModelVersion.objects.create(project=project, name="base", path=model, origin="base")
    rows = [
        {"messages": c["messages"], "tools": json.dumps(c["tools"])}
        for c in demo_domain.generate_conversations(conversations, seed=seed)
    ]
    snap = DatasetSnapshot(
        project=project,
        kind="sft",
        version=1,
        layout="trl_messages",
        status="ready",
        row_count=len(rows),
        sha256="bench",
    )
    snap.file.save("bench-sft.jsonl", ContentFile("\n".join(json.dumps(r) for r in rows) + "\n"), save=False)
    snap.save()
    return project, base, snap
