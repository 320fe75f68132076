"""The taxonomy page (/p/<slug>/taxonomy/): every member of the project reads its categories, with
each one's fix route, the route in force and how many labels use it; those who may edit the taxonomy
(policy.can_edit_taxonomy, the API's rule) add, edit, route, deactivate and reactivate categories
through the taxonomy's service functions, the API's too (taxonomy.create_category / update_category).

Every write is a small POST form that works without JavaScript (a redirect back, or the page again
with the error beside its field and a 400); with htmx the route select and the (de)activate button
save in place and get the tree back, descendants' inherited routes included."""

from collections import defaultdict

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import taxonomy
from .models import Label, Project, Status, TaxonomyCategory
from .policy import can_edit_taxonomy, can_see_pipeline, project_for

FixRoute = TaxonomyCategory.FixRoute
ROUTE_NAMES = {
    FixRoute.SFT: "SFT",
    FixRoute.DPO: "DPO",
    FixRoute.BOTH: "SFT + DPO",
    FixRoute.NONE: "none",
    FixRoute.INHERIT: "not routed",
}

# the route select's options (the empty one, "inherit", is written by each template) and their names
ROUTE_CONTEXT = {"route_names": ROUTE_NAMES, "route_choices": [r for r in FixRoute.values if r]}


class CategoryForm(forms.Form):
    """What a category page form sends. It only reads the fields (a parent must be one of this
    project's categories); the taxonomy's service functions judge the values."""

    name = forms.CharField(required=False)
    description = forms.CharField(required=False)
    root_cause = forms.CharField(required=False)
    recommended_fix = forms.CharField(required=False)
    fix_route = forms.CharField(required=False)
    parent = forms.ModelChoiceField(
        queryset=TaxonomyCategory.objects.none(),
        required=False,
        error_messages={"invalid_choice": "No category %(value)s in this project: choose one from the list."},
    )

    def __init__(self, project: Project, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["parent"].queryset = TaxonomyCategory.objects.filter(project=project)

    def refused(self, exc: ValidationError) -> None:
        """A service function's refusal, each message beside its field."""
        for field, errors in exc.message_dict.items():
            self.add_error(field if field in self.fields else None, errors)


def _project_to_edit(request, slug) -> Project:
    project = project_for(request.user, slug)
    if not can_edit_taxonomy(request.user, project):
        raise PermissionDenied(f"Your role in {project.name} does not let you edit its taxonomy.")
    return project


def _label_counts(project, rows: list[dict]) -> tuple[dict[int, int], dict[int, int]]:
    """Submitted labels (drafts aside) per category, in one query: `direct`, the labels that name the
    category itself, and `under`, for a category with subcategories, the labels that name it or any
    category below it, each label once (so a parent's count is its subtree's, as on the dashboards).

    `rows` are category_rows() in tree order. Categories at one depth have disjoint subtrees, so one
    CASE per depth maps a label's category to its ancestor there (one UNION ALL branch per depth)."""
    base = (
        Label.categories.through.objects.filter(label__project=project)
        .exclude(label__status=Status.DRAFT)
        .values_list("label_id", "taxonomycategory_id")
        .order_by()
    )
    sql, params = base.query.sql_with_params()
    params = list(params)
    subtree: dict[int, list[int]] = defaultdict(list)
    chain: list[int] = []
    for row in rows:
        del chain[row["depth"] :]
        chain.append(row["cat"].pk)
        for node in chain:
            subtree[node].append(row["cat"].pk)
    by_depth: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        if not row["leaf"]:
            by_depth[row["depth"]].append(row["cat"].pk)
    parts = ["SELECT 0 AS kind, cat, COUNT(*) AS n FROM bl GROUP BY cat"]
    for _depth, nodes in sorted(by_depth.items()):
        whens = []
        for node in nodes:
            whens.append(f"WHEN cat IN ({', '.join(['%s'] * len(subtree[node]))}) THEN %s")
            params += [*subtree[node], node]
        parts.append(
            f"SELECT 1 AS kind, node, COUNT(DISTINCT label_id) AS n FROM (SELECT label_id, "
            f"CASE {' '.join(whens)} END AS node FROM bl) s WHERE node IS NOT NULL GROUP BY node"
        )
    direct: dict[int, int] = {}
    under: dict[int, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH bl(label_id, cat) AS ({sql}) "
            + " UNION ALL ".join(f"SELECT * FROM ({p}) q{i}" for i, p in enumerate(parts)),
            params,
        )
        for kind, cat, n in cursor.fetchall():
            (under if kind else direct)[cat] = n
    return direct, under


def _tree(project) -> list[dict]:
    """Every category in tree order with the route in force (and the category it comes from), its
    submitted labels (a parent's: its subtree's) and the key the labelling page gives it. Three
    queries, however many categories."""
    rows = taxonomy.category_rows(project, inactive=True)
    by_pk = {row["cat"].pk: row["cat"] for row in rows}
    routes = taxonomy.resolve_routes((c.pk, c.parent_id, c.fix_route) for c in by_pk.values())
    direct, under = _label_counts(project, rows)
    # the labelling page's picker numbers its (active) leaves in this order: type the number to tick one
    picker = taxonomy.category_rows(project)
    keys = {row["cat"].pk: n for n, row in enumerate((r for r in picker if r["leaf"]), 1)}
    in_picker = {row["cat"].pk for row in picker}
    for row in rows:
        cat = row["cat"]
        route, origin = routes.get(cat.pk, ("", None))
        row.update(
            route=route,
            inherited_from=by_pk[origin] if origin is not None and origin != cat.pk else None,
            labels=under.get(cat.pk, 0) if not row["leaf"] else direct.get(cat.pk, 0),
            # a parent's count is its subtree's; the page says so, and how many name the parent itself
            labels_direct=direct.get(cat.pk, 0),
            key=keys.get(cat.pk),
            hidden_by_parent=cat.active and cat.pk not in in_picker,
        )
    return rows


def _tree_context(request, project, **extra) -> dict:
    return {
        "project": project,
        "rows": _tree(project),
        "can_edit": can_edit_taxonomy(request.user, project),
        **ROUTE_CONTEXT,
        "route_errors": {},
        **extra,
    }


def _page(request, project, *, add_form=None, status=200, **extra):
    context = _tree_context(request, project, **extra)
    if context["can_edit"] and add_form is None:
        add_form = CategoryForm(project, initial={"parent": request.GET.get("parent")})
    context.update(
        add_form=add_form,
        can_see_datasets=can_see_pipeline(request.user, project),
    )
    return render(request, "annotator/taxonomy.html", context, status=status)


def _back_to(project, category) -> str:
    return f"{reverse('annotator:taxonomy', args=[project.slug])}#cat-{category.pk}"


@login_required
def taxonomy_page(request, slug):
    return _page(request, project_for(request.user, slug))


@login_required
@require_POST
def category_create(request, slug):
    project = _project_to_edit(request, slug)
    form = CategoryForm(project, request.POST)
    if form.is_valid():
        try:
            category = taxonomy.create_category(project, **form.cleaned_data)
        except ValidationError as exc:
            form.refused(exc)
        else:
            where = f" under {category.parent.name}" if category.parent else ""
            messages.success(request, f"Added {category.name}{where}.")
            return redirect(_back_to(project, category))
    return _page(request, project, add_form=form, status=400)


@login_required
def category_edit(request, slug, pk):
    project = _project_to_edit(request, slug)
    category = get_object_or_404(TaxonomyCategory, project=project, pk=pk)
    fields = ("name", "description", "root_cause", "recommended_fix", "fix_route", "parent")
    status = 200
    if request.method == "POST":
        form = CategoryForm(project, request.POST)
        if form.is_valid():
            try:
                # only the fields the form sent: a partial post (a script, a stale form) changes no others
                sent = [f for f in fields if f in request.POST]
                taxonomy.update_category(category, **{f: form.cleaned_data[f] for f in sent})
            except ValidationError as exc:
                form.refused(exc)
            else:
                messages.success(request, f"Saved {category.name}.")
                return redirect(_back_to(project, category))
        category.refresh_from_db()
        status = 400
    else:
        form = CategoryForm(project, initial={f: getattr(category, f) for f in fields})
    parents = [row for row in taxonomy.category_rows(project, inactive=True) if row["cat"].pk != category.pk]
    return render(
        request,
        "annotator/taxonomy_edit.html",
        {"project": project, "category": category, "form": form, "parents": parents, **ROUTE_CONTEXT},
        status=status,
    )


def _saved(request, project, category, *, error=None, note=""):
    """After a route or (de)activation: the tree in place for htmx, else back to the page (the page
    again with the error beside the category's route, 400, when it was refused)."""
    status = 400 if error else 200
    extra = {"route_errors": {category.pk: error}} if error else {"saved": note}
    if request.headers.get("HX-Request"):
        context = _tree_context(request, project, **extra)
        return render(request, "annotator/_taxonomy_tree.html", context, status=status)
    if error:
        return _page(request, project, status=status, **extra)
    messages.success(request, note)
    return redirect(_back_to(project, category))


@login_required
@require_POST
def category_route(request, slug, pk):
    project = _project_to_edit(request, slug)
    category = get_object_or_404(TaxonomyCategory, project=project, pk=pk)
    if "fix_route" not in request.POST:
        return _saved(request, project, category, error="Send fix_route: sft, dpo, both, none, or empty.")
    try:
        taxonomy.update_category(category, fix_route=request.POST["fix_route"])
    except ValidationError as exc:
        error = " ".join(exc.message_dict.get("fix_route", exc.messages))
        return _saved(request, project, category, error=error)
    route = ROUTE_NAMES[category.fix_route] if category.fix_route else "its parent's route"
    return _saved(request, project, category, note=f"{category.name}: fixes now go to {route}.")


@login_required
@require_POST
def category_active(request, slug, pk):
    project = _project_to_edit(request, slug)
    category = get_object_or_404(TaxonomyCategory, project=project, pk=pk)
    value = request.POST.get("active")
    if value not in ("0", "1"):
        error = "Send active=1 to reactivate or active=0 to deactivate."
        return _saved(request, project, category, error=error)
    try:
        taxonomy.update_category(category, active=value == "1")
    except ValidationError as exc:  # the row itself breaks a rule (e.g. a legacy name): say so, no 500
        return _saved(request, project, category, error=" ".join(exc.messages))
    if category.active:
        note = f"{category.name} is active again: annotators can pick it."
    else:
        note = f"{category.name} is inactive: annotators no longer see it; labels that use it keep it."
    return _saved(request, project, category, note=note)
