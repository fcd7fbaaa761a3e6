// The playground's behaviour: each panel calls the gateway's public routes as any client would.
// The API key goes only in the Authorization header (job events are read with fetch, not EventSource,
// which could carry it only in the URL). 429 and 503 answers are retried after their Retry-After.
"use strict";

const $ = (id) => document.getElementById(id);
const settings = document.body.dataset;
const MEGABYTE = 1024 * 1024;
const KEY_STORAGE = "genmedia.apiKey";
const FINAL_STATUSES = ["succeeded", "failed", "canceled"];
// How often a job's event stream is reopened when it closes before the job finished.
const EVENT_STREAM_RECONNECTS = 5;

class ApiError extends Error {
  constructor(status, message, retryAfterS = null) {
    super(message);
    this.status = status;
    this.retryAfterS = retryAfterS;
  }
}

// --- The API key ---------------------------------------------------------------------------------

const keyField = $("api-key");
const needsKey = settings.needsKey === "true";
$("access").hidden = !needsKey;
keyField.value = sessionStorage.getItem(KEY_STORAGE) || "";
keyField.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, keyField.value.trim()));

function authorization() {
  const key = keyField.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// --- Calls -----------------------------------------------------------------------------------------

// The response of a call, or an ApiError with the gateway's `error` message (and Retry-After for 429/503).
async function call(path, options, signal) {
  const response = await fetch(path, {
    ...options,
    headers: { ...authorization(), ...(options.headers || {}) },
    signal,
    cache: "no-store",
  });
  if (response.ok) return response;
  let message = null;
  try {
    message = (await response.json()).error;
  } catch {
    // Not JSON: fall back to the status line below.
  }
  const retryAfterS = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  const retryable = (response.status === 429 || response.status === 503) && retryAfterS >= 0;
  throw new ApiError(
    response.status,
    message || `The gateway answered ${response.status} ${response.statusText}.`,
    retryable ? Math.max(1, retryAfterS) : null,
  );
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

// `attempt()`, retried after the wait a 429 or 503 asks for, counting down in the panel meanwhile.
async function withRetry(panel, attempt) {
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof ApiError) || error.retryAfterS === null) throw error;
      for (let left = error.retryAfterS; left > 0; left--) {
        panel.show(`${error.message} Retrying in ${left} s…`, "wait");
        await sleep(1000, panel.signal);
      }
      panel.show("Retrying…", "busy");
    }
  }
}

async function postJson(path, body, signal) {
  const response = await call(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  }, signal);
  return response.json();
}

// Each job the stream reports (the job as it is now, then one per change), until a final status. A stream
// cut short (a proxy, a restarting gateway) is reopened where it stopped, with Last-Event-ID.
async function* jobEvents(panel, eventsUrl) {
  let lastEventId = null;
  for (let reconnects = 0; reconnects <= EVENT_STREAM_RECONNECTS; reconnects++) {
    const headers = { Accept: "text/event-stream" };
    if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
    const response = await withRetry(panel, () => call(eventsUrl, { headers }, panel.signal));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (panel.signal.aborted) throw error;
        break;
      }
      if (chunk.done) break;
      buffer += chunk.value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          // A blank line ends an event.
          if (data.length === 0) continue;
          const job = JSON.parse(data.join("\n"));
          data = [];
          yield job;
          if (FINAL_STATUSES.includes(job.status)) {
            await reader.cancel();
            return;
          }
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") data.push(text);
          else if (field === "id") lastEventId = text;
        }
      }
    }
  }
  throw new Error("The job's event stream kept closing before the job finished; try again.");
}

// --- Panels ----------------------------------------------------------------------------------------

class Panel {
  constructor(name) {
    this.section = $(`${name}-panel`);
    this.status = $(`${name}-status`);
    this.progress = $(`${name}-progress`);
    this.result = $(`${name}-result`) || $(`${name}-output`);
    this.controller = null;
  }

  get signal() {
    return this.controller.signal;
  }

  // A new request in this panel: the one before it, if still going, is abandoned.
  begin() {
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    this.section.setAttribute("aria-busy", "true");
    this.result.hidden = true;
    if (this.progress) {
      this.progress.hidden = true;
      this.progress.value = 0;
    }
    return this.controller.signal;
  }

  end() {
    this.section.removeAttribute("aria-busy");
    if (this.progress) this.progress.hidden = true;
  }

  show(message, kind = "info") {
    this.status.textContent = message;
    this.status.dataset.kind = kind;
  }

  showJob(job) {
    if (job.status === "queued") {
      const ahead = job.queue_position;
      this.show(ahead ? `Queued: ${ahead} job${ahead === 1 ? "" : "s"} ahead.` : "Queued: next in line.", "busy");
    } else if (job.status === "running") {
      const percent = Math.round((job.progress || 0) * 100);
      this.show(`Running${job.stage ? ` (${job.stage})` : ""}: ${percent}%`, "busy");
    }
    this.progress.hidden = false;
    this.progress.value = job.progress || 0;
  }

  // Runs `work` for this panel, showing what goes wrong as the gateway said it.
  async run(work) {
    const signal = this.begin();
    try {
      await work(signal);
    } catch (error) {
      if (signal.aborted) return;
      this.show(error.message || String(error), "error");
    } finally {
      if (!signal.aborted) this.end();
    }
  }
}

// A job's result, following its events; a failed job throws its error.
async function runJob(panel, route, body) {
  const job = await withRetry(panel, () => postJson(`/jobs/${route}`, body, panel.signal));
  panel.showJob(job);
  for await (const event of jobEvents(panel, job.events_url || `/jobs/${job.id}/events`)) {
    panel.showJob(event);
    if (event.status === "succeeded") return event.result;
    if (event.status === "failed") throw new ApiError(event.error.status, event.error.message);
    if (event.status === "canceled") throw new Error("The job was canceled.");
  }
  throw new Error("The job's event stream ended before the job finished.");
}

function loaded(element, event, signal) {
  return new Promise((resolve, reject) => {
    element.addEventListener(event, resolve, { once: true });
    element.addEventListener("error", () => reject(new Error("The browser could not load the file.")), { once: true });
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

function optionalNumber(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

// --- Image -----------------------------------------------------------------------------------------

const imagePanel = new Panel("image");

function shellQuoted(text) {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

function curlFor(route, body) {
  const lines = [`curl -X POST ${location.origin}/${route}`];
  if (needsKey) lines.push(`  -H "Authorization: Bearer $GENMEDIA_API_KEY"`);
  lines.push(`  -H "Content-Type: application/json"`, `  -d ${shellQuoted(JSON.stringify(body))}`);
  return lines.join(" \\\n");
}

$("image-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const body = {
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value || undefined,
    width: optionalNumber("width"),
    height: optionalNumber("height"),
    steps: optionalNumber("steps"),
    seed: optionalNumber("seed"),
  };
  imagePanel.run(async (signal) => {
    imagePanel.show("Submitting…", "busy");
    const result = await runJob(imagePanel, "generate_image", body);
    const image = $("image-output");
    const shown = loaded(image, "load", signal);
    image.src = result.public_url;
    await shown;
    $("image-seed").textContent = result.seed;
    $("image-size").textContent = `${result.width}×${result.height}`;
    // The same request with its seed reproduces this image (answered from storage).
    $("image-curl").textContent = curlFor("generate_image", { ...body, seed: result.seed });
    imagePanel.result.hidden = false;
    imagePanel.show(result.cached ? "Done (from storage)." : "Done.", "done");
  });
});

$("copy-curl").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("image-curl").textContent);
    imagePanel.show("The curl command is on the clipboard.", "done");
  } catch {
    imagePanel.show("The browser refused the clipboard: select the command above and copy it.", "info");
  }
});

// --- Speech ----------------------------------------------------------------------------------------

const speechPanel = new Panel("speech");
const voiceField = $("voice");
const voiceDescriptions = new Map();

function showVoice() {
  const described = voiceField.value === "";
  $("description-field").hidden = !described;
  $("voice-about").textContent = described ? "" : voiceDescriptions.get(voiceField.value) || "";
}

// The voice list shares the speech panel's status line but not its requests: loading it never stops a job.
let voicesController = null;

async function loadVoices() {
  if (needsKey && !keyField.value.trim()) return;
  if (voicesController) voicesController.abort();
  voicesController = new AbortController();
  const signal = voicesController.signal;
  const status = { signal, show: (message, kind) => speechPanel.show(message, kind) };
  try {
    const { voices } = await withRetry(status, async () => (await call("/voices", {}, signal)).json());
    const chosen = voiceField.value;
    voiceField.replaceChildren(new Option("Describe a voice", ""));
    voiceDescriptions.clear();
    for (const voice of voices) {
      voiceDescriptions.set(voice.name, voice.description);
      voiceField.add(new Option(voice.name, voice.name, false, voice.name === chosen));
    }
    if (speechPanel.status.dataset.kind !== "busy") speechPanel.show(`${voices.length} voices.`, "info");
    showVoice();
  } catch (error) {
    if (!signal.aborted) speechPanel.show(`Voices: ${error.message}`, "error");
  }
}

voiceField.addEventListener("change", showVoice);
keyField.addEventListener("change", loadVoices);

$("speech-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const voice = voiceField.value;
  const body = {
    text: $("text").value,
    format: $("audio-format").value,
    ...(voice ? { voice } : { description: $("description").value || undefined }),
  };
  speechPanel.run(async (signal) => {
    speechPanel.show("Submitting…", "busy");
    const result = await runJob(speechPanel, "synthesize_speech", body);
    const audio = $("speech-output");
    const ready = loaded(audio, "loadedmetadata", signal);
    audio.src = result.public_url;
    await ready;
    $("speech-duration").textContent = result.duration_s.toFixed(2);
    speechPanel.result.hidden = false;
    speechPanel.show(result.cached ? "Done (from storage)." : "Done.", "done");
  });
});

// --- Caption ---------------------------------------------------------------------------------------

const captionPanel = new Panel("caption");
const fileField = $("image-file");
const dropZone = $("drop-zone");
const preview = $("caption-preview");
const maxUploadBytes = Number(settings.maxUploadBytes);
$("upload-limit").textContent = maxUploadBytes / MEGABYTE;

// The gateway's own words for a file over the limit, so the page refuses it without sending 10 MB.
function tooLarge(file) {
  if (file.size <= maxUploadBytes) return null;
  return `image: the file is ${(file.size / MEGABYTE).toFixed(1)} MB, over the ${maxUploadBytes / MEGABYTE} MB limit.`;
}

function chosen() {
  const file = fileField.files[0];
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !file;
  preview.removeAttribute("src");
  $("caption-output").hidden = true;
  if (!file) return;
  preview.src = URL.createObjectURL(file);
  const problem = tooLarge(file);
  captionPanel.show(problem || `${file.name}, ${(file.size / 1024).toFixed(0)} KB`, problem ? "error" : "info");
}

fileField.addEventListener("change", chosen);
for (const name of ["dragenter", "dragover"]) {
  dropZone.addEventListener(name, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
}
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  if (event.dataTransfer.files.length === 0) return;
  fileField.files = event.dataTransfer.files;
  chosen();
});

$("caption-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = fileField.files[0];
  captionPanel.run(async (signal) => {
    if (!file) throw new Error("image: choose a PNG, JPEG or WebP file first.");
    const problem = tooLarge(file);
    if (problem) throw new Error(problem);
    captionPanel.show("Captioning…", "busy");
    const { caption } = await withRetry(captionPanel, async () => {
      const form = new FormData();
      form.append("image", file);
      return (await call("/caption_image", { method: "POST", body: form }, signal)).json();
    });
    const output = $("caption-output");
    output.textContent = caption;
    output.hidden = false;
    captionPanel.show("Done.", "done");
  });
});

showVoice();
loadVoices();
