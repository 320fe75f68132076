"""REST API and CSV downloads behind the lead dashboards (same functions as the pages).

    GET /api/projects/<slug>/dashboards/{overview,annotators,agreement,models}/    JSON
    GET /api/projects/<slug>/dashboards/<page>/<table>.csv                          one chart's table
    GET /api/projects/<slug>/dashboards/cases/          (+ cases.csv)               labels behind a number
    GET /api/projects/<slug>/dashboards/comparisons/    (+ comparisons.csv)         preferences behind a cell

Leads and admins of the project only (annotators 403, non-members 404). Filters are query
parameters: model (id, comma-separated for several), from, to (YYYY-MM-DD, inclusive), annotator
(user id), split, status (submitted, approved, rejected, comma-separated, or all), bucket (day,
week, month, year, auto), category (scope). A bad filter value answers 400 with the field and the reason.
"""

from django.http import Http404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import APIView

from ..csv_export import csv_response
from ..models import Role
from ..policy import project_for
from .filters import BUCKETS, MAX_BUCKETS, FilterError, Filters, as_id
from .lists import CaseFilters, case_page, case_queryset, case_row, comparison_page, comparison_queryset
from .pages import PAGES, compute
from .tables import tables as page_tables

FILTER_PARAMS = [
    OpenApiParameter("model", str, description="Model version id(s), comma-separated."),
    OpenApiParameter(
        "from", OpenApiTypes.DATE, description="Submitted on or after this day (1970-01-01 at the earliest)."
    ),
    OpenApiParameter(
        "to", OpenApiTypes.DATE, description="Submitted on or before this day (2999-12-31 at the latest)."
    ),
    OpenApiParameter("annotator", int, description="User id."),
    OpenApiParameter("split", str, enum=["train", "eval", "holdout"]),
    OpenApiParameter(
        "status",
        str,
        description="submitted, approved, rejected (comma-separated) or all; default submitted,approved.",
    ),
    OpenApiParameter(
        "bucket",
        str,
        enum=[*BUCKETS, "auto"],
        description=f"A span of more than {MAX_BUCKETS} buckets moves to the next larger one.",
    ),
    OpenApiParameter("category", int, description="Category id: badcases in its subtree."),
    OpenApiParameter("fresh", str, enum=["1"], description="Recompute instead of the short-lived cache."),
]
CASE_PARAMS = [
    OpenApiParameter("verdict", str, enum=["reasonable", "unreasonable"]),
    OpenApiParameter("direct", str, enum=["1"], description="With category: that exact category only."),
    OpenApiParameter("pair", str, description="'a,b' user ids: a's labels on items b also judged."),
    OpenApiParameter("disagree", str, enum=["1"], description="Only items whose verdicts differ."),
    OpenApiParameter("category_split", int, description="Items where judges split on this category."),
    OpenApiParameter("gold", str, enum=["match", "mismatch"], description="Against the lead's gold verdict."),
    OpenApiParameter("page", int),
]
COMPARISON_PARAMS = [
    OpenApiParameter("model_a", int),
    OpenApiParameter("model_b", int),
    OpenApiParameter("outcome", str, enum=["win", "loss", "tie"], description="From model_a's side."),
    OpenApiParameter("page", int),
]


def _filters(request) -> Filters:
    try:
        return Filters.parse(request.query_params, strict=True)
    except FilterError as exc:
        raise exceptions.ValidationError(exc.errors) from None


class DashboardView(APIView):
    page = ""

    @extend_schema(
        parameters=FILTER_PARAMS,
        responses=OpenApiTypes.OBJECT,
        description="A dashboard's numbers for a project (see annotator/dashboards).",
    )
    def get(self, request, slug):
        project = project_for(request.user, slug, Role.LEAD)
        return Response(
            compute(self.page, project, _filters(request), fresh=request.query_params.get("fresh") == "1")
        )


class DashboardCsvView(APIView):
    page = ""

    @extend_schema(
        parameters=FILTER_PARAMS,
        responses={(200, "text/csv"): OpenApiTypes.STR},
        description="One table behind a dashboard chart, as CSV.",
    )
    def get(self, request, slug, table):
        project = project_for(request.user, slug, Role.LEAD)
        data = compute(self.page, project, _filters(request), fresh=request.query_params.get("fresh") == "1")
        tables = page_tables(self.page, data)
        if table not in tables:
            raise Http404(f"No table {table!r} on the {self.page} dashboard; there are: {', '.join(tables)}.")
        header, rows = tables[table]
        return csv_response(f"{project.slug}-{self.page}-{table}.csv", header, rows)


def _page(request) -> int:
    try:
        return int(request.query_params.get("page", 1))
    except ValueError:
        raise exceptions.ValidationError({"page": "not a number"}) from None


CASE_HEADER = [
    "label_id",
    "response_id",
    "conversation_id",
    "external_id",
    "split",
    "model_version",
    "annotator",
    "verdict",
    "status",
    "categories",
    "time_spent_s",
    "submitted_at",
    "note",
]


class CasesView(APIView):
    @extend_schema(
        parameters=FILTER_PARAMS + CASE_PARAMS,
        responses=OpenApiTypes.OBJECT,
        description="The labels behind a dashboard number, newest first, 50 a page.",
    )
    def get(self, request, slug):
        project = project_for(request.user, slug, Role.LEAD)
        return Response(
            case_page(project, _filters(request), CaseFilters.parse(request.query_params), _page(request))
        )


class CasesCsvView(APIView):
    @extend_schema(
        parameters=FILTER_PARAMS + CASE_PARAMS,
        responses={(200, "text/csv"): OpenApiTypes.STR},
        description="All labels behind a dashboard number, as CSV (streamed).",
    )
    def get(self, request, slug):
        project = project_for(request.user, slug, Role.LEAD)
        qs = (
            case_queryset(project, _filters(request), CaseFilters.parse(request.query_params))
            .select_related("annotator", "model_version", "response__conversation")
            .prefetch_related("categories")
            .order_by("-submitted_at", "-id")
        )

        def rows():
            for label in qs.iterator(chunk_size=2000):
                r = case_row(label)
                yield [
                    r["label"],
                    r["response"],
                    r["conversation"],
                    r["external_id"],
                    r["split"],
                    r["model_version"] or "",
                    r["annotator"],
                    r["verdict"],
                    r["status"],
                    "; ".join(r["categories"]),
                    r["time_spent_s"],
                    r["submitted_at"].isoformat() if r["submitted_at"] else "",
                    r["note"],
                ]

        return csv_response(f"{project.slug}-cases.csv", CASE_HEADER, rows())


def _comparison_args(request):
    def as_int(name):
        raw = request.query_params.get(name)
        if raw in (None, ""):
            return None
        value = as_id(raw)
        if value is None:
            raise exceptions.ValidationError({name: "not a model version id"})
        return value

    outcome = request.query_params.get("outcome", "")
    if outcome not in ("", "win", "loss", "tie"):
        raise exceptions.ValidationError({"outcome": "choose win, loss or tie"})
    return as_int("model_a"), as_int("model_b"), outcome


class ComparisonsView(APIView):
    @extend_schema(
        parameters=FILTER_PARAMS + COMPARISON_PARAMS,
        responses=OpenApiTypes.OBJECT,
        description="The pairwise preferences behind a win-rate cell, newest first, 50 a page.",
    )
    def get(self, request, slug):
        project = project_for(request.user, slug, Role.LEAD)
        a, b, outcome = _comparison_args(request)
        return Response(comparison_page(project, _filters(request), a, b, outcome, _page(request)))


class ComparisonsCsvView(APIView):
    @extend_schema(
        parameters=FILTER_PARAMS + COMPARISON_PARAMS,
        responses={(200, "text/csv"): OpenApiTypes.STR},
        description="All preferences behind a win-rate cell, as CSV.",
    )
    def get(self, request, slug):
        project = project_for(request.user, slug, Role.LEAD)
        a, b, outcome = _comparison_args(request)
        qs = (
            comparison_queryset(project, _filters(request), a, b, outcome)
            .select_related(
                "annotator",
                "response_a__model_version",
                "response_b__model_version",
                "response_a__conversation",
            )
            .order_by("-submitted_at", "-id")
        )

        def rows():
            for p in qs.iterator(chunk_size=2000):
                ma, mb = p.response_a.model_version, p.response_b.model_version
                yield [
                    p.pk,
                    p.response_a.conversation.external_id,
                    ma.name if ma else "",
                    mb.name if mb else "",
                    p.choice,
                    p.left_side,
                    p.annotator.username,
                    p.status,
                    p.submitted_at.isoformat() if p.submitted_at else "",
                    p.reason,
                ]

        return csv_response(
            f"{project.slug}-comparisons.csv",
            [
                "preference_id",
                "external_id",
                "model_a",
                "model_b",
                "choice",
                "left_side",
                "annotator",
                "status",
                "submitted_at",
                "reason",
            ],
            rows(),
        )


urlpatterns = [
    path("cases/", CasesView.as_view(), name="dash-api-cases"),
    path("cases.csv", CasesCsvView.as_view(), name="dash-api-cases-csv"),
    path("comparisons/", ComparisonsView.as_view(), name="dash-api-comparisons"),
    path("comparisons.csv", ComparisonsCsvView.as_view(), name="dash-api-comparisons-csv"),
]
for _page_name in PAGES:
    urlpatterns += [
        path(f"{_page_name}/", DashboardView.as_view(page=_page_name), name=f"dash-api-{_page_name}"),
        path(
            f"{_page_name}/<slug:table>.csv",
            DashboardCsvView.as_view(page=_page_name),
            name=f"dash-api-{_page_name}-csv",
        ),
    ]
