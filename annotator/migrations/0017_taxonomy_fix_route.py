from django.db import migrations, models

ROUTE_CHOICES = [
    ("", "as its parent (a top-level category: not routed)"),
    ("sft", "SFT: the correction as a training example"),
    ("dpo", "DPO: the correction over the model's output"),
    ("both", "both SFT and DPO"),
    ("none", "neither (fixed outside the training data)"),
]
HELP = (
    "Which snapshots a correction in this category feeds when routed by the taxonomy. "
    "Empty: the parent's route."
)

# The default taxonomy's routes as they stood when routing was added (annotator/taxonomy.py
# DEFAULT_ROUTES may move on; a migration keeps its own copy). Top-level categories by name:
TOP = {"Tool use": "dpo", "Content": "sft", "Format": "sft"}
# children: name -> (their default parent, their own route; "" = the parent's)
CHILDREN = {
    "Tool not called": ("Tool use", ""),
    "Wrong tool": ("Tool use", ""),
    "Wrong arguments": ("Tool use", ""),
    "Unneeded tool call": ("Tool use", ""),
    "Fabricated tool result": ("Tool use", ""),
    "Malformed tool call": ("Tool use", ""),
    "Hallucinated fact": ("Content", ""),
    "Off-domain or unsafe": ("Content", ""),
    "Business flow error": ("Content", ""),
    "Think-tag or format defect": ("Format", ""),
    "Repetition": ("Format", "dpo"),
    "Too short": ("Format", ""),
    "Tone or persona": ("Format", "both"),
}


def route_default_categories(apps, schema_editor):
    """Give every project's default-taxonomy categories their route. A child keeps "" (its parent's)
    where that already gives its route; moved or renamed ones get theirs written out. Categories a
    project made itself stay unrouted (their corrections go both ways, as before routing)."""
    Category = apps.get_model("annotator", "TaxonomyCategory")
    cats = {
        pk: (name, parent) for pk, name, parent in Category.objects.values_list("pk", "name", "parent_id")
    }
    route = {pk: TOP[name] for pk, (name, parent) in cats.items() if parent is None and name in TOP}
    for pk, (name, parent) in cats.items():
        if name not in CHILDREN:
            continue
        default_parent, own = CHILDREN[name]
        wanted = own or TOP[default_parent]
        if own or route.get(parent) != wanted:
            route[pk] = wanted
    for value in set(route.values()):
        Category.objects.filter(pk__in=[pk for pk, r in route.items() if r == value]).update(fix_route=value)


class Migration(migrations.Migration):
    dependencies = [
        ("annotator", "0016_history_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="historicaltaxonomycategory",
            name="fix_route",
            field=models.CharField(
                blank=True, choices=ROUTE_CHOICES, default="", help_text=HELP, max_length=4
            ),
        ),
        migrations.AddField(
            model_name="taxonomycategory",
            name="fix_route",
            field=models.CharField(
                blank=True, choices=ROUTE_CHOICES, default="", help_text=HELP, max_length=4
            ),
        ),
        migrations.RunPython(route_default_categories, migrations.RunPython.noop),
    ]
