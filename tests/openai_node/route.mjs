// The openai npm package against a genmedia gateway, called the way a Next.js route handler
// (app/api/media/route.ts) would: only baseURL and apiKey differ from calling OpenAI.
// Run: GENMEDIA_URL=http://127.0.0.1:3000 GENMEDIA_API_KEY=… node route.mjs → one JSON line on stdout.
import OpenAI from "openai";

const openai = new OpenAI({
  baseURL: `${process.env.GENMEDIA_URL}/v1`,
  apiKey: process.env.GENMEDIA_API_KEY,
  maxRetries: 0,
});

export async function POST(request) {
  const { prompt, text } = await request.json();
  try {
    const image = await openai.images.generate({ prompt, size: "64x64", n: 1 });
    const speech = await openai.audio.speech.create({
      model: "tts-1",
      voice: "nova",
      input: text,
      response_format: "wav",
    });
    const audio = Buffer.from(await speech.arrayBuffer());
    return Response.json({
      url: image.data[0].url,
      audio: audio.toString("base64"),
      contentType: speech.headers.get("content-type"),
    });
  } catch (error) {
    if (error instanceof OpenAI.APIError) {
      return Response.json({ error: error.message, type: error.constructor.name }, { status: error.status ?? 502 });
    }
    throw error;
  }
}

const response = await POST(
  new Request("http://localhost/api/media", {
    method: "POST",
    body: JSON.stringify({ prompt: "a red kite over a green hill", text: "Hello from Node." }),
  }),
);
console.log(JSON.stringify({ status: response.status, ...(await response.json()) }));
