"""Contains all the data models used in inputs/outputs"""

from .caption_image_request import CaptionImageRequest
from .caption_result import CaptionResult
from .error import Error
from .generate_image_request import GenerateImageRequest
from .generate_image_request_format import GenerateImageRequestFormat
from .image_job_request import ImageJobRequest
from .image_job_request_format import ImageJobRequestFormat
from .image_job_request_webhook_events_type_0_item import (
    ImageJobRequestWebhookEventsType0Item,
)
from .image_result import ImageResult
from .image_result_format import ImageResultFormat
from .job import Job
from .job_error import JobError
from .job_kind import JobKind
from .job_status import JobStatus
from .job_submitted import JobSubmitted
from .job_submitted_kind import JobSubmittedKind
from .job_submitted_status import JobSubmittedStatus
from .job_webhook import JobWebhook
from .job_webhook_events_item import JobWebhookEventsItem
from .speech_job_request import SpeechJobRequest
from .speech_job_request_format import SpeechJobRequestFormat
from .speech_job_request_voice_type_0 import SpeechJobRequestVoiceType0
from .speech_job_request_webhook_events_type_0_item import (
    SpeechJobRequestWebhookEventsType0Item,
)
from .speech_result import SpeechResult
from .speech_result_format import SpeechResultFormat
from .synthesize_speech_request import SynthesizeSpeechRequest
from .synthesize_speech_request_format import SynthesizeSpeechRequestFormat
from .synthesize_speech_request_voice_type_0 import SynthesizeSpeechRequestVoiceType0
from .webhook_delivery import WebhookDelivery
from .webhook_delivery_status import WebhookDeliveryStatus
from .webhook_delivery_type import WebhookDeliveryType

__all__ = (
    "CaptionImageRequest",
    "CaptionResult",
    "Error",
    "GenerateImageRequest",
    "GenerateImageRequestFormat",
    "ImageJobRequest",
    "ImageJobRequestFormat",
    "ImageJobRequestWebhookEventsType0Item",
    "ImageResult",
    "ImageResultFormat",
    "Job",
    "JobError",
    "JobKind",
    "JobStatus",
    "JobSubmitted",
    "JobSubmittedKind",
    "JobSubmittedStatus",
    "JobWebhook",
    "JobWebhookEventsItem",
    "SpeechJobRequest",
    "SpeechJobRequestFormat",
    "SpeechJobRequestVoiceType0",
    "SpeechJobRequestWebhookEventsType0Item",
    "SpeechResult",
    "SpeechResultFormat",
    "SynthesizeSpeechRequest",
    "SynthesizeSpeechRequestFormat",
    "SynthesizeSpeechRequestVoiceType0",
    "WebhookDelivery",
    "WebhookDeliveryStatus",
    "WebhookDeliveryType",
)
