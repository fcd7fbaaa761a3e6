from enum import StrEnum


class SpeechJobRequestFormat(StrEnum):
    FLAC = "flac"
    MP3 = "mp3"
    OGG = "ogg"
    WAV = "wav"

    def __str__(self) -> str:
        return str(self.value)
