from enum import StrEnum


class WebhookDeliveryType(StrEnum):
    JOB_COMPLETED = "job.completed"
    JOB_PROGRESS = "job.progress"
    JOB_STARTED = "job.started"

    def __str__(self) -> str:
        return str(self.value)
