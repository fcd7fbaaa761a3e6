from enum import StrEnum


class SpeechJobRequestFormat(StrEnum):
    FLAC = "flac"
    OGG = "ogg"
    WAV = "wav"

    def __str__(self) -> str:
        return str(self.value)
