"""The data behind every chart of a page as flat tables, for the CSV downloads."""


# --- CSV tables ---------------------------------------------------------------------------------


def _pct(v):
    return "" if v is None else round(v, 6)


def tables(page: str, data: dict) -> dict[str, tuple[list[str], list[list]]]:
    """The data behind every chart of a page as flat tables: {name: (header, rows)} for CSV."""
    out = {}
    if page == "overview":
        models = data["models"]
        out["categories"] = (
            [
                "category_id",
                "path",
                "depth",
                "badcases",
                "share_of_badcases",
                "rate_of_labels",
                *[f"rate[{m['name']}]" for m in models],
                "root_cause",
                "recommended_fix",
            ],
            [
                [
                    c["category"],
                    c["path"],
                    c["depth"],
                    c["badcases"],
                    _pct(c["share_of_badcases"]),
                    _pct(c["rate"]),
                    *[_pct(c["by_model"][str(m["id"])]["rate"]) for m in models],
                    c["root_cause"],
                    c["recommended_fix"],
                ]
                for c in data["categories"]
                if c["in_scope"]
            ],
        )
        out["pareto"] = (
            ["category_id", "path", "badcases", "share", "cumulative", "root_cause", "recommended_fix"],
            [
                [
                    p["category"],
                    p["path"],
                    p["badcases"],
                    _pct(p["share"]),
                    _pct(p["cumulative"]),
                    p["root_cause"],
                    p["recommended_fix"],
                ]
                for p in data["pareto"]
            ],
        )
        out["by_model"] = (
            [
                "model_version_id",
                "model_version",
                "labels",
                "badcases",
                "rate",
                "rate_low_95",
                "rate_high_95",
                "parent",
                "change_vs_parent",
            ],
            [
                [
                    m["model_version"],
                    m["name"],
                    m["labels"],
                    m["badcases"],
                    _pct(m["rate"]),
                    _pct(m["rate_low"]),
                    _pct(m["rate_high"]),
                    m["parent"] or "",
                    _pct(m["change_vs_parent"]),
                ]
                for m in data["by_model"]
            ],
        )
        rows = []
        for r in data["over_time"]["rows"]:
            rows.append(
                [
                    r["start"].isoformat(),
                    r["end"].isoformat(),
                    "all",
                    r["labels"],
                    r["badcases"],
                    _pct(r["rate"]),
                ]
            )
            for m in models:
                cell = r["by_model"][str(m["id"])]
                rows.append(
                    [
                        r["start"].isoformat(),
                        r["end"].isoformat(),
                        m["name"],
                        cell["labels"],
                        cell["badcases"],
                        _pct(cell["rate"]),
                    ]
                )
        out["over_time"] = (
            ["bucket_start", "bucket_end", "model_version", "labels", "badcases", "rate"],
            rows,
        )
    elif page == "annotators":
        out["annotators"] = (
            [
                "annotator_id",
                "annotator",
                "labels",
                "comparisons",
                "items",
                "hours",
                "items_per_hour",
                "median_s",
                "p25_s",
                "p75_s",
                "p90_s",
                "skips",
                "skip_rate",
                "reviewed",
                "approved",
                "rejected",
                "approval_rate",
                "rejection_rate",
                "peer_items",
                "peer_agreement",
                "peer_kappa",
                "gold_items",
                "gold_agreement",
                "gold_kappa",
            ],
            [
                [
                    r["annotator"],
                    r["name"],
                    r["labels"],
                    r["comparisons"],
                    r["items"],
                    round(r["hours"], 4),
                    _pct(r["items_per_hour"]),
                    r["median_s"],
                    r["p25_s"],
                    r["p75_s"],
                    r["p90_s"],
                    r["skips"],
                    _pct(r["skip_rate"]),
                    r["reviewed"],
                    r["approved"],
                    r["rejected"],
                    _pct(r["approval_rate"]),
                    _pct(r["rejection_rate"]),
                    r["peer_items"],
                    _pct(r["peer_agreement"]),
                    _pct(r["peer_kappa"]),
                    r["gold_items"],
                    _pct(r["gold_agreement"]),
                    _pct(r["gold_kappa"]),
                ]
                for r in data["rows"]
            ],
        )
        out["time_per_item"] = (
            ["annotator", *data["time_bins"]],
            [[r["name"], *r["time_bins"]] for r in data["rows"]],
        )
    elif page == "agreement":
        out["pairs"] = (
            [
                "annotator_a",
                "annotator_b",
                "items",
                "agreement",
                "chance_agreement",
                "kappa",
                "disagreements",
            ],
            [
                [
                    p["a_name"],
                    p["b_name"],
                    p["items"],
                    _pct(p["agreement"]),
                    _pct(p["expected"]),
                    _pct(p["kappa"]),
                    p["disagreements"],
                ]
                for p in data["pairs"]
            ],
        )
        out["categories"] = (
            [
                "category_id",
                "path",
                "units_chosen_in",
                "choices",
                "split_units",
                "alpha",
                "specific_agreement",
            ],
            [
                [
                    c["category"],
                    c["path"],
                    c["units"],
                    c["choices"],
                    c["split_units"],
                    _pct(c["alpha"]),
                    _pct(c["specific_agreement"]),
                ]
                for c in data["categories"]
            ],
        )
        out["items"] = (
            [
                "response_id",
                "conversation",
                "model_version",
                "reasonable",
                "unreasonable",
                "gold",
                "judgements",
            ],
            [
                [
                    i["response"],
                    i["external_id"],
                    i["model_version"] or "",
                    i["reasonable"],
                    i["unreasonable"],
                    i["gold"] or "",
                    "; ".join(
                        f"{j['annotator']}={j['verdict']}"
                        + (f" [{', '.join(j['categories'])}]" if j["categories"] else "")
                        for j in i["judgements"]
                    ),
                ]
                for i in data["items"]
            ],
        )
        v, p = data["verdict"], data["preferences"]
        out["summary"] = (
            ["measure", "value", "units"],
            [
                ["verdict_alpha", _pct(v["alpha"]), v["units"]],
                ["verdict_pairwise_agreement", _pct(v["pairwise_agreement"]), v["units"]],
                ["choice_alpha", _pct(p["alpha"]), p["units"]],
                ["choice_alpha_better_only", _pct(p["alpha_better"]), p["units"]],
                ["choice_pairwise_agreement", _pct(p["pairwise_agreement"]), p["units"]],
                ["choice_pairwise_agreement_better_only", _pct(p["pairwise_agreement_better"]), p["units"]],
            ],
        )
    elif page == "models":
        names = {v["id"]: v["name"] for v in data["versions"]}
        out["ratings"] = (
            [
                "model_version_id",
                "model_version",
                "rating",
                "low_95",
                "high_95",
                "log_strength",
                "comparisons",
            ],
            [
                [
                    r["model_version"],
                    r["name"],
                    _pct(r["rating"]),
                    _pct(r["low"]),
                    _pct(r["high"]),
                    _pct(r["beta"]),
                    r["comparisons"],
                ]
                for r in data["ratings"]
            ],
        )
        out["win_rates"] = (
            [
                "model",
                "opponent",
                "comparisons",
                "wins",
                "losses",
                "ties",
                "both_bad",
                "win_rate",
                "win_rate_low_95",
                "win_rate_high_95",
                "decisive_win_rate",
            ],
            [
                [
                    names[c["a"]],
                    names[c["b"]],
                    c["comparisons"],
                    c["wins"],
                    c["losses"],
                    c["ties"],
                    c["both_bad"],
                    _pct(c["win_rate"]),
                    _pct(c["low"]),
                    _pct(c["high"]),
                    _pct(c["decisive_win_rate"]),
                ]
                for row in data["matrix"]
                for c in row
                if c and c["comparisons"]
            ],
        )
        metrics = data["evaluation"].get("metrics") or []
        suite = data["evaluation"].get("suite") or ""

        def evals(r):
            ev = (r["eval"] or {}).get("metrics") or {}
            return [
                v
                for m in metrics
                for v in (_pct((ev.get(m) or {}).get("value")), _pct((ev.get(m) or {}).get("se")))
            ]

        out["lineage"] = (
            [
                "model_version_id",
                "model_version",
                "lineage",
                "origin",
                "stage",
                "labels",
                "badcases",
                "badcase_rate",
                "badcase_change_vs_parent",
                "rating",
                "win_rate_vs_parent",
                "comparisons_vs_parent",
                "eval_suite",
                *[f"{m}{x}" for m in metrics for x in ("", "_se")],
            ],
            [
                [
                    r["model_version"],
                    r["name"],
                    " > ".join(r["lineage"]),
                    r["origin"],
                    r["stage"],
                    r["labels"],
                    r["badcases"],
                    _pct(r["badcase_rate"]),
                    _pct(r["badcase_change"]),
                    _pct(r["rating"]),
                    _pct(r["win_rate_vs_parent"]),
                    r["comparisons_vs_parent"],
                    suite if r["eval"] else "",
                    *evals(r),
                ]
                for r in data["lineage"]
            ],
        )
    return out
