"""REST API for dataset snapshots. Leads read; admins create, rebuild and delete (as on the pages)."""

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.response import Response

from annotator.api_base import ProjectScopedViewSet
from annotator.models import Role
from annotator.policy import can_see_pipeline
from jobs import lifecycle

from . import serializers as s
from .models import DatasetSnapshot
from .snapshots import storage
from .snapshots.bundle import BundleError, ensure_bundle
from .snapshots.selection import count_matching


def snapshot_download(snapshot: DatasetSnapshot) -> FileResponse:
    """The ready file as an attachment, with its sha256 for the client to check."""
    response = FileResponse(
        open(storage.media_path(snapshot.file.name), "rb"),
        as_attachment=True,
        filename=snapshot.download_name,
        content_type="application/x-ndjson",
    )
    response["X-Content-SHA256"] = snapshot.sha256
    response["ETag"] = f'"{snapshot.sha256}"'
    return response


def snapshot_bundle_download(snapshot: DatasetSnapshot) -> FileResponse:
    """The ready snapshot's bundle (.tar.gz: JSONL, Parquet, dataset card, manifest …), made first
    when the build left none, with its sha256. Raises BundleError when it cannot be made."""
    info = ensure_bundle(snapshot)
    try:
        fh = open(storage.bundle_path(storage.media_path(snapshot.file.name)), "rb")
    except OSError as exc:  # deleted in between
        raise BundleError(f"The bundle is gone ({exc.strerror}).") from exc
    response = FileResponse(
        fh, as_attachment=True, filename=info["download_name"], content_type="application/gzip"
    )
    response["X-Content-SHA256"] = info["sha256"]
    response["ETag"] = f'"{info["sha256"]}"'
    return response


class NotReady(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "not_ready"


class BundleUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "bundle_unavailable"


class DatasetSnapshotViewSet(ProjectScopedViewSet):
    """Dataset snapshots (SFT, DPO, eval). Created `queued`; a worker builds them; poll `progress`
    and `status`. A ready snapshot never changes: delete it and build another."""

    serializer_class = s.DatasetSnapshotSerializer
    base_queryset = DatasetSnapshot.objects.select_related("project", "created_by")
    read_role = Role.LEAD
    write_role = Role.ADMIN
    http_method_names = ["get", "post", "delete", "head", "options"]
    filterset_fields = {"project__slug": ["exact"], "kind": ["exact"], "status": ["exact"]}

    def _ready(self) -> DatasetSnapshot:
        snapshot = self.get_object()
        if snapshot.status != DatasetSnapshot.State.READY:
            raise NotReady(f"Only a ready snapshot can be downloaded (this one is {snapshot.status}).")
        return snapshot

    @extend_schema(responses={(200, "application/x-ndjson"): bytes, 409: None})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """The JSONL file, byte for byte (X-Content-SHA256 holds its hash)."""
        return snapshot_download(self._ready())

    @extend_schema(responses={(200, "application/gzip"): bytes, 409: None, 503: None})
    @action(detail=True, methods=["get"])
    def bundle(self, request, pk=None):
        """The snapshot as a .tar.gz: the JSONL, a Parquet copy, a dataset card (README.md with the
        Hugging Face YAML header), manifest.json (filters, counts, audit, hashes) and, for the
        llamafactory layout, dataset_info.json. X-Content-SHA256 holds the archive's hash."""
        snapshot = self._ready()
        try:
            return snapshot_bundle_download(snapshot)
        except BundleError as exc:
            raise BundleUnavailable(f"The bundle could not be made: {exc}") from exc

    @extend_schema(responses=s.PreviewRowSerializer(many=True))
    @action(detail=True, methods=["get"])
    def preview(self, request, pk=None):
        """The first 20 rows read back as chat messages (context, target, rejected), with their sources."""
        return Response(storage.preview(self.get_object()))

    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Build a failed (or stalled) snapshot again, same spec and version."""
        snapshot = self.get_object()
        self.check_write(snapshot.project)
        lifecycle.resume(snapshot)
        return Response(self.get_serializer(snapshot).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.CountRequestSerializer, responses=s.CountResponseSerializer)
    @action(detail=False, methods=["post"])
    def count(self, request):
        """How many rows a spec would export, by source: the create form's live count."""
        serializer = s.CountRequestSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        project = serializer.validated_data["project"]
        if not can_see_pipeline(request.user, project):
            raise exceptions.PermissionDenied(f"This needs the lead role in project {project.slug!r}.")
        spec = serializer.validated_data["spec"]
        return Response(count_matching(project.pk, spec["kind"], spec["filters"]))
