from enum import StrEnum


class ImageJobRequestWebhookEventsType0Item(StrEnum):
    COMPLETED = "completed"
    PROGRESS = "progress"
    STARTED = "started"

    def __str__(self) -> str:
        return str(self.value)
