from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.task_status import TaskStatus
from ..types import UNSET, Unset

T = TypeVar("T", bound="TaskStatusResponse")


@_attrs_define
class TaskStatusResponse:
    """
    Attributes:
        task_id (str):
        status (TaskStatus):
        created_at (str):
        executed_at (None | str):
        completed_at (None | str | Unset):
    """

    task_id: str
    status: TaskStatus
    created_at: str
    executed_at: None | str
    completed_at: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        task_id = self.task_id

        status = self.status.value

        created_at = self.created_at

        executed_at: None | str
        executed_at = self.executed_at

        completed_at: None | str | Unset
        if isinstance(self.completed_at, Unset):
            completed_at = UNSET
        else:
            completed_at = self.completed_at

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "task_id": task_id,
                "status": status,
                "created_at": created_at,
                "executed_at": executed_at,
            }
        )
        if completed_at is not UNSET:
            field_dict["completed_at"] = completed_at

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        task_id = d.pop("task_id")

        status = TaskStatus(d.pop("status"))

        created_at = d.pop("created_at")

        def _parse_executed_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        executed_at = _parse_executed_at(d.pop("executed_at"))

        def _parse_completed_at(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        completed_at = _parse_completed_at(d.pop("completed_at", UNSET))

        task_status_response = cls(
            task_id=task_id,
            status=status,
            created_at=created_at,
            executed_at=executed_at,
            completed_at=completed_at,
        )

        task_status_response.additional_properties = d
        return task_status_response

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
