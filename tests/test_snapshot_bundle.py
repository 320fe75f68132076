"""The download bundle: exactly its files, a dataset card whose YAML header the Hugging Face tools
read, hashes that match, a Parquet copy that loads as the same rows as the JSONL, and downloads
under the same rule as the JSONL's."""

import hashlib
import io
import json
import os
import tarfile

import pytest
import yaml

from training import tasks
from training.models import DatasetSnapshot
from training.snapshots import bundle, layouts, storage
from training.snapshots.build import create_snapshot
from training.snapshots.bundle.parquet import JSON_TEXT_COLUMNS

from .test_datasets_factories import assistant, call, label, preference, response, stock_question
from .test_snapshot_layouts import FIX, parallel_dialogue

os.environ["HF_HUB_OFFLINE"] = "1"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def world(project, members):
    conv = parallel_dialogue(project)
    held_out = parallel_dialogue(project, "e-1", split="eval")
    label(response(held_out, raw="Done! Your order is placed."), members["annotator"], correction=FIX)
    label(
        response(conv, raw="Done! Your order is placed."),
        members["annotator"],
        categories=["Tool not called"],
        correction=FIX,
    )
    for i in range(3):
        c = stock_question(project, i)
        a = response(c, raw="Yes, it is in stock and ships today.")
        b = response(
            c,
            raw=f'<tool_call>{{"name": "check_inventory", "arguments": {{"sku": "A-{i}"}}}}</tool_call>',
            model="agent-v2",
        )
        label(
            a, members["annotator"], correction=assistant(None, [call("check_inventory", {"sku": f"A-{i}"})])
        )
        preference(a, b, members["annotator2"], "b")
    return project


def build(project, user, kind, layout):
    """As the exports worker does: the build, then the bundle (training.tasks.build_snapshot).

    SFT takes every correction (routing "all"): the world's "Tool not called" fix, which the taxonomy
    routes to DPO, is the row these tests read in both kinds (routing: tests/test_fix_routing.py)."""
    filters = {"routing": "all"} if kind == "sft" else {}
    pk = create_snapshot(project, user, {"kind": kind, "layout": layout, "filters": filters}, start=False).pk
    tasks.build_snapshot.apply(args=[pk]).get()
    snap = DatasetSnapshot.objects.get(pk=pk)
    assert snap.status == "ready", snap.message
    return snap


def members_of(path):
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}, [
            m.name for m in tar.getmembers()
        ]


def card_header(readme: bytes) -> dict:
    text = readme.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.mark.parametrize(("kind", "layout"), [("dpo", "llamafactory"), ("sft", "trl_prompt_completion")])
def test_the_bundle_holds_exactly_its_files_and_their_hashes(world, members, kind, layout):
    snap = build(world, members["admin"], kind, layout)
    info = bundle.read_info(snap)  # the build made it
    assert info is not None
    path = storage.bundle_path(storage.media_path(snap.file.name))
    assert (
        hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
        and path.stat().st_size == info["bytes"]
    )
    files, order = members_of(path)
    stem = f"sales-{kind}-v1"
    expected = [stem, f"{stem}/README.md", f"{stem}/manifest.json"]
    expected += [f"{stem}/dataset_info.json"] if layout == "llamafactory" else []
    expected += [f"{stem}/{stem}.jsonl", f"{stem}/{stem}.parquet"]
    assert order == expected == info["members"]
    jsonl = files[f"{stem}/{stem}.jsonl"]
    assert jsonl == storage.media_path(snap.file.name).read_bytes()
    manifest = json.loads(files[f"{stem}/manifest.json"])
    assert manifest == info["manifest"]
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == {n.removeprefix(f"{stem}/") for n in expected[1:]} - {"manifest.json"}
    for name, entry in listed.items():
        data = files[f"{stem}/{name}"]
        assert (entry["bytes"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), name
    assert listed[f"{stem}.jsonl"]["sha256"] == snap.sha256
    assert manifest["snapshot"] | {"created_at": None, "finished_at": None} == {
        "id": snap.pk,
        "name": f"{kind}-v1",
        "kind": kind,
        "version": 1,
        "layout": layout,
        "layout_description": layouts.LAYOUTS[kind][layout],
        "trains_on": manifest["snapshot"]["trains_on"],
        "note": "",
        "rows": snap.row_count,
        "sha256": snap.sha256,
        "created_at": None,
        "created_by": "admin",
        "finished_at": None,
    }
    assert (
        manifest["filters"] == snap.filters
        and manifest["counts"]["rows_by_source"] == snap.stats["rows_by_source"]
    )
    assert {c["key"]: c["outcome"] for c in manifest["audit"]["checks"]} == {
        c["key"]: c["outcome"] for c in snap.audit["checks"]
    }
    header = card_header(files[f"{stem}/README.md"])
    split = "train"
    assert header["configs"] == [
        {"config_name": "default", "data_files": [{"split": split, "path": f"{stem}.parquet"}]}
    ]
    assert header["dataset_info"]["splits"] == [
        {"name": split, "num_bytes": header["dataset_info"]["dataset_size"], "num_examples": snap.row_count}
    ]
    assert header["dataset_info"]["download_size"] == len(files[f"{stem}/{stem}.parquet"])
    assert header["size_categories"] == ["n<1K"] and header["task_categories"] == ["text-generation"]
    assert header["license"] == "unknown"
    body = files[f"{stem}/README.md"].decode()
    for entry in listed.values():
        if entry["path"] != "README.md":
            assert entry["sha256"] in body  # the card lists every data file's hash
    assert "Tool not called" in body and "Row loses something in its layout" in body
    if layout == "llamafactory":
        assert json.loads(files[f"{stem}/dataset_info.json"]) == json.loads(
            layouts.llamafactory_dataset_info(snap)
        )
        assert (
            next(iter(json.loads(files[f"{stem}/dataset_info.json"]).values()))["file_name"]
            == f"{stem}.jsonl"
        )


ALL_LAYOUTS = [
    ("sft", "trl_messages"),
    ("sft", "trl_prompt_completion"),
    ("sft", "openai_chat"),
    ("dpo", "trl_preference"),
    ("dpo", "openai_preference"),
    ("dpo", "llamafactory"),
    ("eval", "eval_cases"),
]


def _no_nulls(value):
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


@pytest.mark.parametrize(("kind", "layout"), ALL_LAYOUTS)
def test_the_parquet_copy_loads_as_the_same_rows_as_the_jsonl(world, members, tmp_path, kind, layout):
    from datasets import Features, load_dataset

    snap = build(world, members["admin"], kind, layout)
    files, _ = members_of(storage.bundle_path(storage.media_path(snap.file.name)))
    out = tmp_path / "bundle"
    out.mkdir()
    for name, data in files.items():
        if data is not None:
            (out / name.rsplit("/", 1)[1]).write_bytes(data)
    stem = f"sales-{kind}-v1"
    cache = str(tmp_path / "hf-cache")
    parquet = load_dataset("parquet", data_files=str(out / f"{stem}.parquet"), split="train", cache_dir=cache)
    jsonl = load_dataset("json", data_files=str(out / f"{stem}.jsonl"), split="train", cache_dir=cache)
    assert parquet.num_rows == jsonl.num_rows == snap.row_count
    # the card's features are exactly what `datasets` reads from the Parquet file
    header = card_header(files[f"{stem}/README.md"])
    assert Features._from_yaml_list(header["dataset_info"]["features"]) == parquet.features
    split = "test" if kind == "eval" else "train"  # the hub's name for held-out rows
    assert header["configs"][0]["data_files"] == [{"split": split, "path": f"{stem}.parquet"}]
    json_text = JSON_TEXT_COLUMNS.get(layout, ())
    rows_pq, rows_json = parquet.to_list(), jsonl.to_list()
    for row in rows_pq:
        for path in json_text:
            holder = row
            for key in path[:-1]:
                holder = holder[key]
            holder[path[-1]] = json.loads(holder[path[-1]])
    assert [_no_nulls(r) for r in rows_pq] == [_no_nulls(r) for r in rows_json]
    # and as the file's own lines (what `datasets` infers from JSON adds null keys; nothing else)
    lines = [json.loads(x) for x in (out / f"{stem}.jsonl").read_text().splitlines()]
    assert [_no_nulls(r) for r in rows_pq] == [_no_nulls(r) for r in lines]
    if not json_text:  # with the card's features, `datasets` reads the JSONL as exactly the Parquet rows
        typed = load_dataset(
            "json",
            data_files=str(out / f"{stem}.jsonl"),
            split="train",
            features=parquet.features,
            cache_dir=cache,
        )
        assert typed.to_list() == parquet.to_list()


def test_a_bundle_made_again_has_the_same_bytes_and_downloads_make_a_missing_one(api, members, world):
    snap = build(world, members["admin"], "dpo", "trl_preference")
    jsonl = storage.media_path(snap.file.name)
    first = storage.bundle_path(jsonl).read_bytes()
    storage.bundle_path(jsonl).unlink()  # as for a snapshot built before bundles existed
    assert bundle.read_info(snap) is None
    download = api(members["lead"]).get(f"/api/datasets/{snap.pk}/bundle/")
    assert download.status_code == 200 and download["Content-Type"] == "application/gzip"
    content = b"".join(download.streaming_content)
    assert content == first and hashlib.sha256(content).hexdigest() == download["X-Content-SHA256"]
    assert 'filename="sales-dpo-v1.tar.gz"' in download["Content-Disposition"]
    # the plain JSONL download is unchanged
    plain = api(members["lead"]).get(f"/api/datasets/{snap.pk}/download/")
    assert b"".join(plain.streaming_content) == jsonl.read_bytes()


def test_a_changed_file_gets_no_bundle_and_a_clear_error(api, client, members, world):
    snap = build(world, members["admin"], "sft", "trl_messages")
    jsonl = storage.media_path(snap.file.name)
    storage.bundle_info_path(jsonl).unlink()
    storage.bundle_path(jsonl).unlink()
    jsonl.write_bytes(jsonl.read_bytes().replace(b"Placing", b"Plodding"))
    response = api(members["admin"]).get(f"/api/datasets/{snap.pk}/bundle/")
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The bundle could not be made: The snapshot's file no longer matches its sha256; it was "
        "changed on disk."
    }
    assert sorted(p.name for p in jsonl.parent.iterdir()) == sorted(
        [jsonl.name, storage.index_path(jsonl).name]
    )
    client.force_login(members["lead"])
    page = client.get(f"/p/{world.slug}/datasets/{snap.pk}/bundle/", follow=True)
    assert page.status_code == 200 and "The bundle could not be made" in page.content.decode()


@pytest.mark.parametrize(
    ("role", "status"), [("outsider", 404), ("annotator", 404), ("lead", 200), ("admin", 200)]
)
def test_the_bundle_downloads_under_the_jsonl_rule(api, members, world, role, status):
    snap = build(world, members["admin"], "dpo", "llamafactory")
    client = api(members[role])
    assert client.get(f"/api/datasets/{snap.pk}/download/").status_code == status
    assert client.get(f"/api/datasets/{snap.pk}/bundle/").status_code == status


@pytest.mark.parametrize(
    ("role", "status"), [("outsider", 404), ("annotator", 403), ("lead", 200), ("admin", 200)]
)
def test_the_bundle_page_link_follows_the_jsonl_rule(client, members, world, role, status):
    snap = build(world, members["admin"], "dpo", "llamafactory")
    client.force_login(members[role])
    base = f"/p/{world.slug}/datasets/{snap.pk}/"
    assert client.get(f"{base}download/").status_code == status
    response = client.get(f"{base}bundle/")
    assert response.status_code == status
    if status == 200:
        assert (
            tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content)), mode="r:gz").getnames()[0]
            == "sales-dpo-v1"
        )
        page = client.get(base).content.decode()
        assert f"{base}bundle/" in page and snap.sha256 in page and bundle.read_info(snap)["sha256"] in page


def test_no_bundle_before_ready_and_none_after_delete(
    api, client, members, world, django_capture_on_commit_callbacks
):
    queued = create_snapshot(world, members["admin"], {"kind": "sft"}, start=False)
    response = api(members["admin"]).get(f"/api/datasets/{queued.pk}/bundle/")
    assert response.status_code == 409
    assert response.json() == {"detail": "Only a ready snapshot can be downloaded (this one is queued)."}
    client.force_login(members["admin"])
    assert client.get(f"/p/{world.slug}/datasets/{queued.pk}/bundle/").status_code == 404
    snap = build(world, members["admin"], "dpo", "trl_preference")
    jsonl = storage.media_path(snap.file.name)
    assert storage.bundle_path(jsonl).exists() and storage.bundle_info_path(jsonl).exists()
    with django_capture_on_commit_callbacks(execute=True):
        snap.delete()
    assert not list(jsonl.parent.iterdir())


def test_card_text_is_inert_markdown_and_its_yaml_reads_back_exactly():
    import yaml

    from training.snapshots.bundle.card import _md, _scalar

    hostile = "![x](https://evil.example/t.png) [click](https://evil.example) <img src=x> *a*\n# h | b"
    shown = _md(hostile)
    assert "\n" not in shown
    for i, ch in enumerate(shown):  # every character Markdown could read as markup comes escaped
        if ch in "![]()<>*#|":
            assert shown[i - 1] == "\\", (ch, shown[: i + 1])
    assert shown.replace("\\", "") == hostile.replace("\n", " ")  # nothing lost but the line break
    for value in ("a\x7fb", "x\x85y", 'q"uote\\', "\u2028", "plain"):
        assert yaml.safe_load("k: " + _scalar(value))["k"] == value
