from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_kind import JobKind
from ..models.job_status import JobStatus
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.image_result import ImageResult
    from ..models.job_error import JobError
    from ..models.job_webhook import JobWebhook
    from ..models.speech_result import SpeechResult


T = TypeVar("T", bound="Job")


@_attrs_define
class Job:
    """
    Attributes:
        id (str):
        kind (JobKind):
        status (JobStatus):
        progress (float):
        queue_position (int | None):
        created_at (str):
        started_at (None | str):
        finished_at (None | str):
        result (ImageResult | None | SpeechResult): The sync route's answer, once succeeded.
        error (JobError | None):
        webhook (JobWebhook | None):
        stage (None | str | Unset):
    """

    id: str
    kind: JobKind
    status: JobStatus
    progress: float
    queue_position: int | None
    created_at: str
    started_at: None | str
    finished_at: None | str
    result: ImageResult | None | SpeechResult
    error: JobError | None
    webhook: JobWebhook | None
    stage: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.image_result import ImageResult
        from ..models.job_error import JobError
        from ..models.job_webhook import JobWebhook
        from ..models.speech_result import SpeechResult

        id = self.id

        kind = self.kind.value

        status = self.status.value

        progress = self.progress

        queue_position: int | None
        queue_position = self.queue_position

        created_at = self.created_at

        started_at: None | str
        started_at = self.started_at

        finished_at: None | str
        finished_at = self.finished_at

        result: dict[str, Any] | None
        if isinstance(self.result, ImageResult) or isinstance(
            self.result, SpeechResult
        ):
            result = self.result.to_dict()
        else:
            result = self.result

        error: dict[str, Any] | None
        if isinstance(self.error, JobError):
            error = self.error.to_dict()
        else:
            error = self.error

        webhook: dict[str, Any] | None
        if isinstance(self.webhook, JobWebhook):
            webhook = self.webhook.to_dict()
        else:
            webhook = self.webhook

        stage: None | str | Unset
        if isinstance(self.stage, Unset):
            stage = UNSET
        else:
            stage = self.stage

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "id": id,
                "kind": kind,
                "status": status,
                "progress": progress,
                "queue_position": queue_position,
                "created_at": created_at,
                "started_at": started_at,
                "finished_at": finished_at,
                "result": result,
                "error": error,
                "webhook": webhook,
            }
        )
        if stage is not UNSET:
            field_dict["stage"] = stage

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.image_result import ImageResult
        from ..models.job_error import JobError
        from ..models.job_webhook import JobWebhook
        from ..models.speech_result import SpeechResult

        d = dict(src_dict)
        id = d.pop("id")

        kind = JobKind(d.pop("kind"))

        status = JobStatus(d.pop("status"))

        progress = d.pop("progress")

        def _parse_queue_position(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        queue_position = _parse_queue_position(d.pop("queue_position"))

        created_at = d.pop("created_at")

        def _parse_started_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        started_at = _parse_started_at(d.pop("started_at"))

        def _parse_finished_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        finished_at = _parse_finished_at(d.pop("finished_at"))

        def _parse_result(data: object) -> ImageResult | None | SpeechResult:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                result_type_0 = ImageResult.from_dict(data)

                return result_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                result_type_1 = SpeechResult.from_dict(data)

                return result_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(ImageResult | None | SpeechResult, data)

        result = _parse_result(d.pop("result"))

        def _parse_error(data: object) -> JobError | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                error_type_0 = JobError.from_dict(data)

                return error_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(JobError | None, data)

        error = _parse_error(d.pop("error"))

        def _parse_webhook(data: object) -> JobWebhook | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                webhook_type_0 = JobWebhook.from_dict(data)

                return webhook_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(JobWebhook | None, data)

        webhook = _parse_webhook(d.pop("webhook"))

        def _parse_stage(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        stage = _parse_stage(d.pop("stage", UNSET))

        job = cls(
            id=id,
            kind=kind,
            status=status,
            progress=progress,
            queue_position=queue_position,
            created_at=created_at,
            started_at=started_at,
            finished_at=finished_at,
            result=result,
            error=error,
            webhook=webhook,
            stage=stage,
        )

        job.additional_properties = d
        return job

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
