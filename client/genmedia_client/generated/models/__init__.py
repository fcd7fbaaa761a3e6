"""Contains all the data models used in inputs/outputs"""

from .caption_image_request import CaptionImageRequest
from .caption_result import CaptionResult
from .error import Error
from .generate_image_request import GenerateImageRequest
from .generate_image_request_format import GenerateImageRequestFormat
from .image_result import ImageResult
from .image_result_format import ImageResultFormat
from .speech_result import SpeechResult
from .speech_result_format import SpeechResultFormat
from .synthesize_speech_request import SynthesizeSpeechRequest
from .synthesize_speech_request_format import SynthesizeSpeechRequestFormat
from .synthesize_speech_request_voice_type_0 import SynthesizeSpeechRequestVoiceType0
from .task_status import TaskStatus
from .task_status_response import TaskStatusResponse
from .task_submitted import TaskSubmitted

__all__ = (
    "CaptionImageRequest",
    "CaptionResult",
    "Error",
    "GenerateImageRequest",
    "GenerateImageRequestFormat",
    "ImageResult",
    "ImageResultFormat",
    "SpeechResult",
    "SpeechResultFormat",
    "SynthesizeSpeechRequest",
    "SynthesizeSpeechRequestFormat",
    "SynthesizeSpeechRequestVoiceType0",
    "TaskStatus",
    "TaskStatusResponse",
    "TaskSubmitted",
)
