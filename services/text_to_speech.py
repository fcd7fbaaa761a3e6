"""Text to speech: Parler-TTS, one service on an L40S.

Parler-TTS speaks `text` in the voice a plain-language `description` asks for. It was trained on clips of at
most 30 s and stops early or drifts past ~20 s of audio in one generation (parler-tts#126), so long text is
split at sentence ends (`genmedia.text_chunks`), the pieces are generated together as one padded batch with
the same description and seed, and joined with short pauses: no sentence is cut off, and a long text costs
one generation, not one per sentence.

Cold start: the weights are built into the Bento (model store), loaded once in `__init__`, and on a GPU one
short warm-up generation runs before the service reports ready. Generation seeds torch's global generator, so it
runs on a single thread, one request at a time; encoding and upload happen in other threads.
"""

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor

import bentoml

from genmedia import logger
from genmedia.audio import audio_duration, change_speed, encode_audio
from genmedia.contract.bodies import BodyGuard
from genmedia.contract.errors import ErrorBodyMiddleware, answers_errors
from genmedia.contract.requests import CONTENT_TYPES, DEFAULT_VOICE, SpeechRequest, SpeechResult
from genmedia.cpu_allocator import keep_freed_memory
from genmedia.metrics import metrics
from genmedia.model_loading import TEXT_TO_SPEECH, load_text_to_speech, pick_device
from genmedia.outputs import OutputStore
from genmedia.settings import get_settings
from genmedia.text_chunks import split_for_speech
from services import ONE_LASTING_CONNECTION, ONE_MALLOC_ARENA

# Silence between two pieces of a long text: about a sentence break when read aloud.
PAUSE_S = 0.25
# Audio a piece may take, from its length: generous for a slow voice (~8 characters a second) plus a lead,
# so a real model always ends on its own; at most the 30 s Parler was trained on (and never more than the
# model's own `generation_config.max_length`).
LEAD_S = 2.0
SECONDS_PER_CHARACTER = 0.12
MAX_PIECE_S = 30.0


@bentoml.service(
    resources={"gpu": 1, "gpu_type": "nvidia-l40s"},
    # A request may wait for a cold start (minutes on BentoCloud) and queue behind other generations.
    traffic={"timeout": 600, "concurrency": 4, "max_concurrency": 32},
    runner_connection=ONE_LASTING_CONNECTION,
    envs=ONE_MALLOC_ARENA,
)
class TextToSpeech:
    model = bentoml.models.BentoModel(f"{TEXT_TO_SPEECH}:latest")

    def __init__(self) -> None:
        started = time.perf_counter()
        self.device, self.dtype = pick_device()
        if self.device == "cpu":  # each pass reuses the last one's memory instead of faulting it in again
            keep_freed_memory()
        self.speech = load_text_to_speech(self.model.path, self.device, self.dtype)
        self.version = str(self.model.tag)
        self.sample_rate = self.speech.sampling_rate
        self.generator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speak")
        self.outputs = OutputStore(TEXT_TO_SPEECH, get_settings())
        if self.device == "cuda":
            # As for images: only a GPU gains from a warm-up, and it runs on the thread that serves requests.
            self.generator.submit(self.speak, ["Warm-up."], DEFAULT_VOICE, 0).result()
        self.outputs.start_draining(get_settings().spool_drain_interval_s)
        logger.info(
            "text-to-speech %s (source %s) ready on %s/%s at %d Hz in %.1f s",
            self.version,
            self.model.info.labels.get("source"),
            self.device,
            self.dtype,
            self.sample_rate,
            time.perf_counter() - started,
        )

    def max_new_tokens(self, pieces: list[str]) -> int:
        """Decoder steps for the longest piece: its audio budget in codec frames, plus the codebook delay."""
        model = self.speech.model
        seconds = min(MAX_PIECE_S, LEAD_S + SECONDS_PER_CHARACTER * max(len(piece) for piece in pieces))
        steps = math.ceil(seconds * model.audio_encoder.config.frame_rate) + model.decoder.config.num_codebooks
        return min(steps, model.generation_config.max_length - 1)

    def speak(self, pieces: list[str], description: str, seed: int):
        """The pieces spoken in order in one voice, with `PAUSE_S` between them: mono float samples."""
        import numpy as np
        import torch

        # The prompt is prepended to the audio codes, so it is padded on the left, as in Parler's training
        # (`prompt_padding_side`); the description feeds the text encoder and is padded on the right.
        descriptions = self.speech.description_tokenizer(
            [description] * len(pieces), return_tensors="pt", padding=True, padding_side="right"
        ).to(self.device)
        prompts = self.speech.prompt_tokenizer(pieces, return_tensors="pt", padding=True, padding_side="left").to(
            self.device
        )
        torch.manual_seed(seed)
        with torch.inference_mode():
            generation = self.speech.model.generate(
                input_ids=descriptions.input_ids,
                attention_mask=descriptions.attention_mask,
                prompt_input_ids=prompts.input_ids,
                prompt_attention_mask=prompts.attention_mask,
                do_sample=True,
                max_new_tokens=self.max_new_tokens(pieces),
                return_dict_in_generate=True,
            )
        # Rows are padded to the longest piece's audio; `audios_length` is where each one really ends.
        audios = [
            generation.sequences[row, :length].float().cpu().numpy()
            for row, length in enumerate(generation.audios_length)
        ]
        pause = np.zeros(round(PAUSE_S * self.sample_rate), dtype=np.float32)
        joined = [audios[0]]
        for audio in audios[1:]:
            joined += [pause, audio]
        return np.concatenate(joined)

    def speak_request(self, request: SpeechRequest):
        """A resolved request's samples, at its speed, timed on the generation thread: a wait in that
        thread's queue is not model time. The speed change runs there too, as it uses torch: from another
        thread it would start a second OpenMP team."""
        started = time.perf_counter()
        samples = self.speak(split_for_speech(request.text), request.description, request.seed)
        if request.speed != 1:
            samples = change_speed(samples, request.speed)
        metrics().generation_seconds.labels(TEXT_TO_SPEECH).observe(time.perf_counter() - started)
        return samples

    @bentoml.api(route="/synthesize_speech")
    @answers_errors
    async def synthesize_speech(self, request: SpeechRequest, /) -> SpeechResult:
        """Speak `text` in the named `voice` or the one `description` describes, store the file, and answer its
        key and URL."""
        request = request.resolved()
        key = request.content_key(self.version)
        result = SpeechResult(
            file_key=key,
            public_url=self.outputs.public_url(key),
            sample_rate=self.sample_rate,
            duration_s=0.0,
            format=request.format,
            model=self.version,
            cached=True,
        )
        if await self.outputs.find(key, where="service"):
            stored = await asyncio.to_thread(self.outputs.store.get, key)
            return result.model_copy(update={"duration_s": audio_duration(stored.data)})

        samples = await asyncio.get_running_loop().run_in_executor(self.generator, self.speak_request, request)
        data = await asyncio.to_thread(encode_audio, samples, self.sample_rate, request.format)
        duration = audio_duration(data)
        metrics().outputs_generated.labels(TEXT_TO_SPEECH).inc()
        metrics().audio_seconds.inc(duration)
        await self.outputs.save(key, data, CONTENT_TYPES[request.format])
        return result.model_copy(update={"duration_s": duration, "cached": False})


# Outermost first: the body's bounds (the same as the gateway's, for when this service is served alone).
TextToSpeech.add_asgi_middleware(BodyGuard)
TextToSpeech.add_asgi_middleware(ErrorBodyMiddleware)
