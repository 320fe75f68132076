"""Regression tests for what an outside attack review found after the policy rework: each one was a
500 or a broken invariant reachable by a project admin."""

import pytest

from annotator.models import Membership, ModelVersion, Role


@pytest.mark.parametrize(
    "settings_value",
    [
        {"lock_ttl_minutes": "abc"},
        {"lock_ttl_minutes": None},
        {"lock_ttl_minutes": [1]},
        {"lock_ttl_minutes": 1e300},
        {"lock_ttl_minutes": True},
        {"strategy": 5},
        {"strategy": "fastest"},
        {"require_preference_reason": "x"},
        {"colour": "red"},
        ["not", "an", "object"],
    ],
)
def test_label_settings_the_queue_cannot_run_with_are_a_400(api, members, project, settings_value):
    before = project.label_settings
    res = api(members[Role.ADMIN]).patch(
        f"/api/projects/{project.slug}/", {"label_settings": settings_value}, format="json"
    )
    project.refresh_from_db()
    assert res.status_code == 400 and "label_settings" in res.json(), res.content
    assert project.label_settings == before
    assert api(members[Role.ANNOTATOR]).get(f"/api/projects/{project.slug}/queue/next/").status_code in (
        200,
        204,
    )


def test_valid_label_settings_are_kept(api, members, project):
    res = api(members[Role.ADMIN]).patch(
        f"/api/projects/{project.slug}/",
        {"label_settings": {"lock_ttl_minutes": 45, "strategy": "random", "blind": False}},
        format="json",
    )
    project.refresh_from_db()
    assert res.status_code == 200 and project.setting("lock_ttl_minutes") == 45
    assert project.setting("strategy") == "random" and project.setting("blind") is False


def test_the_last_admin_can_be_neither_demoted_nor_removed(api, members, project):
    admin = api(members[Role.ADMIN])
    own = Membership.objects.get(project=project, user=members[Role.ADMIN])
    res = admin.patch(f"/api/memberships/{own.pk}/", {"role": "annotator"}, format="json")
    assert res.status_code == 400 and "role" in res.json()
    assert admin.delete(f"/api/memberships/{own.pk}/").status_code == 400
    own.refresh_from_db()
    assert own.role == Role.ADMIN
    # with a second admin, the first may step down
    lead = Membership.objects.get(project=project, user=members[Role.LEAD])
    assert admin.patch(f"/api/memberships/{lead.pk}/", {"role": "admin"}, format="json").status_code == 200
    assert admin.patch(f"/api/memberships/{own.pk}/", {"role": "lead"}, format="json").status_code == 200


def test_a_membership_cannot_be_handed_to_another_user(api, members, project):
    row = Membership.objects.get(project=project, user=members[Role.ANNOTATOR])
    res = api(members[Role.ADMIN]).patch(f"/api/memberships/{row.pk}/", {"user": "outsider"}, format="json")
    row.refresh_from_db()
    assert res.status_code == 400 and "user" in res.json() and row.user == members[Role.ANNOTATOR]


@pytest.mark.parametrize("guard", [[1], "x", 5])
def test_a_training_guard_that_is_not_an_object_is_a_400(api, members, project, guard):
    base = ModelVersion.objects.create(project=project, name="base", origin="base")
    res = api(members[Role.ADMIN]).post(
        "/api/training-jobs/",
        {
            "project": project.slug,
            "stage": "sft",
            "base_version": base.pk,
            "train_snapshot": 1,
            "name": "x",
            "guard": guard,
        },
        format="json",
    )
    assert 400 <= res.status_code < 500, res.content


@pytest.mark.parametrize("device", [5, ["cuda"], {"a": 1}])
def test_an_eval_device_that_is_not_text_is_a_400(project, device):
    from django.core.exceptions import ValidationError

    from evaluation.models import EvalSettings
    from evaluation.runner import clean_settings

    with pytest.raises(ValidationError) as refused:
        clean_settings("local", {"device": device}, EvalSettings.for_project(project))
    assert "device" in refused.value.message_dict


def test_a_unicode_digit_tokenizer_is_a_400(api, members, project):
    res = api(members[Role.ADMIN]).post(
        "/api/datasets/",
        {"project": project.slug, "kind": "sft", "audit_config": {"tokenizer": "²"}},
        format="json",
    )
    assert res.status_code == 400, res.content


@pytest.mark.parametrize("path", ["~", "~/models/base"])
def test_a_home_relative_model_folder_is_refused(api, members, project, path):
    res = api(members[Role.ADMIN]).post(
        "/api/model-versions/", {"project": project.slug, "name": "home", "path": path}, format="json"
    )
    assert res.status_code == 400 and "path" in res.json()
