from enum import StrEnum


class JobSubmittedKind(StrEnum):
    GENERATE_IMAGE = "generate_image"
    SYNTHESIZE_SPEECH = "synthesize_speech"

    def __str__(self) -> str:
        return str(self.value)
