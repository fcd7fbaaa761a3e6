from enum import StrEnum


class SpeechResultFormat(StrEnum):
    FLAC = "flac"
    OGG = "ogg"
    WAV = "wav"

    def __str__(self) -> str:
        return str(self.value)
