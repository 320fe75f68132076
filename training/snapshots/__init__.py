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
* ``resolve`` — one row per item: gold decision, else majority, else left out with a reason
  (labels, corrections, preference pairs); the sources ask it which record speaks for an item.
* ``rows`` — one row before layout: cleaned messages, prompt hash, token counts.
* ``roundtrip`` — every written row read back into messages and compared with its source (an
  audit check: nothing lost, nothing invented).
* ``storage`` — the file, its row index, temp files, the preview.
* ``bundle`` — the download: JSONL, Parquet copy, dataset card, manifest, LLaMA-Factory's
  dataset_info.json, as one ``.tar.gz`` made once the snapshot is ready.

Modules import each other directly (``from training.snapshots.build import build_snapshot``);
this package exports nothing itself.
"""
