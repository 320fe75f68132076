"""Lead dashboards: the analytics as plain functions over one project and a set of filters.

Pages (views.py), the REST API and the CSV downloads (api.py) all call these
functions; nothing here knows about HTTP. Every aggregate runs in the database (GROUP BY, a
self-join for agreement contingency tables, Count(filter=...)) and comes back as a few hundred rows
at most; Python only rolls those up (days into weeks, children into parents) and computes the
statistics in annotator/agreement.py. The number of queries per dashboard does not depend on the data.

Roll-ups (annotator/rollups): the counts come from small pre-aggregated tables kept current on every
write (day x model version, with split x status as columns; per annotator; per category), so a
page reads a few thousand rows instead of grouping every label. Agreement reads its own roll-ups
(verdict units, per-category units, preference units and the disagreement-item index, per status set,
each unit filed under the day it was complete; annotator pairs also per day of their later label);
the cases and comparisons lists take their totals from the roll-ups where they hold them exactly.
What still reads raw rows,
bounded by the filter: case totals under pair / disagreement / gold / annotator-and-category
filters, preference reviews, the time-per-item percentiles under a model filter, and the
overview / model pages filtered to one annotator (that annotator's labels, by index). agreement_core
computes the agreement figures from the labels: the reference the roll-ups are tested against.

Counting unit: a *label* (one annotator's judgement of one model response). A badcase is a label
with the verdict "unreasonable"; the badcase rate is badcase labels / labels. Labels carry their
project and model version (denormalised), so the main aggregates read one table. Drafts are never
counted; by default submitted and approved labels are (`status` filter).

Layout: filters.py (Filters, date windows, the shared roll-up reads), lookups.py (category tree, model
versions, filter choices, rates), one module per page: overview.py, annotators.py, agreement.py,
versions.py (model versions compared); lists.py (the cases and comparisons behind a number),
tables.py (CSV tables), pages.py (a page's data by name, cached); views.py (pages) and api.py (REST
and CSV) turn them into HTTP.
"""
