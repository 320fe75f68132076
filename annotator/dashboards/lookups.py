"""Lookups the dashboards share: the project's category tree, its model versions, the filter choices,
rates and their intervals."""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connection

from .. import agreement as stats
from ..models import (
    Membership,
    ModelVersion,
    Split,
    TaxonomyCategory,
)
from .filters import COUNTED_STATUSES

# --- shared lookups -----------------------------------------------------------------------------


@dataclass
class CategoryTree:
    """The project's taxonomy (all categories, retired ones included: old labels still carry them)."""

    nodes: dict[int, dict]
    children: dict[int | None, list[int]] = field(default_factory=dict)

    @classmethod
    def load(cls, project) -> "CategoryTree":
        rows = (
            TaxonomyCategory.objects.filter(project=project)
            .order_by("position", "name")
            .values(
                "id",
                "parent_id",
                "name",
                "description",
                "root_cause",
                "recommended_fix",
                "active",
                "position",
            )
        )
        nodes = {r["id"]: dict(r) for r in rows}
        children: dict[int | None, list[int]] = defaultdict(list)
        for r in nodes.values():
            parent = r["parent_id"] if r["parent_id"] in nodes else None
            children[parent].append(r["id"])
        tree = cls(nodes, dict(children))
        for node_id, depth in tree.walk():
            nodes[node_id]["depth"] = depth
        return tree

    def walk(self, root: int | None = None, depth: int = 0):
        """(id, depth) in display order, depth-first, below `root` (None: the whole tree)."""
        stack = [(c, depth) for c in reversed(self.children.get(root, []))]
        seen = set()
        while stack:
            node, d = stack.pop()
            if node in seen:  # a cycle in bad data must not hang the page
                continue
            seen.add(node)
            yield node, d
            stack.extend((c, d + 1) for c in reversed(self.children.get(node, [])))

    def subtree(self, node: int) -> list[int]:
        return [node, *(n for n, _ in self.walk(node))]

    def ancestors(self, node: int) -> list[int]:
        """Root first, the node itself excluded."""
        chain, seen = [], {node}
        parent = self.nodes[node]["parent_id"]
        while parent in self.nodes and parent not in seen:
            seen.add(parent)
            chain.append(parent)
            parent = self.nodes[parent]["parent_id"]
        return list(reversed(chain))

    def internal(self) -> list[int]:
        return [n for n in self.nodes if self.children.get(n)]

    def path(self, node: int) -> str:
        return " › ".join(self.nodes[n]["name"] for n in [*self.ancestors(node), node])


def model_versions(project) -> list[dict]:
    """The project's model versions, lineage-ordered (parents before children, then by creation)."""
    rows = list(
        ModelVersion.objects.filter(project=project)
        .order_by("created_at", "id")
        .values("id", "name", "parent_id", "origin", "stage", "created_at")
    )
    by_id = {r["id"]: r for r in rows}
    order, seen = [], set()

    def visit(r):
        if r["id"] in seen:
            return
        seen.add(r["id"])
        if r["parent_id"] in by_id:
            visit(by_id[r["parent_id"]])
        order.append(r)

    for r in rows:
        visit(r)
    return order


def filter_choices(project) -> dict:
    """What the filter bar offers: model versions, annotators (members), splits, statuses."""
    users = list(
        Membership.objects.filter(project=project)
        .select_related("user")
        .order_by("user__username")
        .values("user_id", "user__username", "role")
    )
    return {
        "models": [{"id": m["id"], "name": m["name"]} for m in model_versions(project)],
        "annotators": [{"id": u["user_id"], "name": u["user__username"], "role": u["role"]} for u in users],
        "splits": list(Split.values),
        "statuses": list(COUNTED_STATUSES),
    }


def _nested_aggregate(inner_qs, outer_select: str, group_by: str) -> list[tuple]:
    """Run `SELECT outer_select FROM (inner) sub GROUP BY group_by`: an aggregate over an aggregate."""
    sql, params = inner_qs.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {outer_select} FROM ({sql}) sub GROUP BY {group_by}", params)
        return cursor.fetchall()


def _rate(k, n):
    return k / n if n else None


def _wilson(k, n):
    ci = stats.wilson_interval(k, n)
    return (None, None) if ci is None else ci


def _week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())
