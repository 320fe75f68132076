"""Dashboard roll-ups: small pre-aggregated tables kept current in the transaction of every write.

The dashboards (annotator/dashboards) read these instead of grouping a million labels. Each label and
preference *contributes* a few counter increments to a few roll-up rows (its day, model version,
annotator, categories, reviews ...); a write is "contribution after minus contribution before",
applied as INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c, so concurrent writers add to
the same rows without losing counts (the row lock orders them). `rebuild` recomputes everything
from scratch with the same contribution functions: `manage.py rebuild_rollups` after bulk loads
that bypass the ORM (COPY, queryset.update) and for repairs.

Hooks are Django signals on Label, its categories, Review, Adjudication, Preference, Skip,
Conversation (its split) and TaxonomyCategory (moving or deleting a category recounts the project's
category roll-up), so every path that writes through the ORM (pages, API, admin, demo loop, tests)
keeps the counts exact. Writes that bypass signals (bulk_insert/COPY, bulk_create, queryset.update)
need `rebuild_rollups` afterwards. Several writes to the same objects inside `batched()` (a label
and its categories, a review and its new status) are counted in one pass at its end. Days are local dates
in settings.TIME_ZONE; model version 0 stands for "none"; a counted label without a submission time
is filed under NO_DAY (never inside a date filter).

Layout: the tables are models (annotator/models/rollup_days.py, annotator/models/agreement.py);
contributions.py turns labels, preferences and skips into counter increments; store.py applies them
(upsert), rebuilds and snapshots; signals.py holds the handlers and `batched()`, connected in
AnnotatorConfig.ready().
"""
