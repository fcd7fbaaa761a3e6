from enum import StrEnum


class SpeechJobRequestVoiceType0(StrEnum):
    ALLOY = "alloy"
    ASH = "ash"
    BALLAD = "ballad"
    CORAL = "coral"
    ECHO = "echo"
    FABLE = "fable"
    GARY = "gary"
    JENNA = "jenna"
    JON = "jon"
    LAURA = "laura"
    LEA = "lea"
    MIKE = "mike"
    NOVA = "nova"
    ONYX = "onyx"
    SAGE = "sage"
    SHIMMER = "shimmer"
    VERSE = "verse"

    def __str__(self) -> str:
        return str(self.value)
