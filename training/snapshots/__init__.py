"""Dataset snapshots: immutable, content-hashed SFT / DPO / eval JSONL files built from the
project's reviewed work.

Reading order:

* ``spec.clean_spec`` — the request (kind, layout, filters, audit settings) checked and
  normalised; every error names its field. Used by the form, the API and tests.
* ``selection.count_matching`` — what a spec would read, for the create form's live count.
* ``build.create_snapshot`` — the queued row, the build sent to a worker.
* ``build.build_snapshot`` — the worker's job: stream rows from the database through the
  sources (``sources`` for SFT / eval, ``dpo_sources`` for pairs), the audit (``audit``) and
  the layout (``layouts``) into a temp file, check, then move it into place (``storage``).
* ``rows`` — one row before layout: cleaned messages, prompt hash, token counts.
* ``storage`` — the file, its row index, temp files, the preview.

Modules import each other directly (``from training.snapshots.build import build_snapshot``);
this package exports nothing itself.
"""
