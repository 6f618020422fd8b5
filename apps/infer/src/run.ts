// One lowbit-infer run: load the model as the flags say (progress on stderr), tokenize the prompt or render the chat
// template, stream prompt + completion to stdout in the pieces transformers' TextStreamer would cut, then print
// tokens/s and the time to first token.

import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  AutoModelForCausalLM,
  AutoTokenizer,
  BitsAndBytesConfig,
  generateStream,
  type DeviceMapOption,
  type GenerateOptions,
  type PreTrainedCausalLM,
  type PreTrainedTokenizer,
} from "@lowbit/transformers";
import { UsageError, type CliOptions } from "./args.js";
import { formatBytes, progressBar, statsLine } from "./format.js";

export interface Output {
  out: NodeJS.WritableStream;
  err: NodeJS.WriteStream;
}

/** The model folder, checked: a UsageError when it has no config.json. */
export function checkModelDir(dir: string): string {
  if (!existsSync(join(dir, "config.json"))) {
    throw new UsageError(`--model expects a Hugging Face model folder (with config.json, *.safetensors and tokenizer.json) but ${JSON.stringify(dir)} has no config.json`);
  }
  return dir;
}

export function deviceMapOf(device: string): DeviceMapOption {
  return device as DeviceMapOption; // "cpu" | "auto" | "cuda:N", checked by parseCli
}

/** The bitsandbytes config the flags ask for, or null. */
export function quantizationOf(o: CliOptions): BitsAndBytesConfig | null {
  if (o.loadIn4bit) {
    return new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: o.quantType, bnb4bitUseDoubleQuant: o.doubleQuant, bnb4bitComputeDtype: o.computeDtype });
  }
  if (o.loadIn8bit) return new BitsAndBytesConfig({ loadIn8bit: true });
  return null;
}

export function describeLoad(o: CliOptions): string {
  if (o.loadIn4bit) return `${o.quantType}${o.doubleQuant ? " + double quant" : ""}, compute ${o.computeDtype}`;
  if (o.loadIn8bit) return "LLM.int8";
  return o.dtype === "auto" ? "unquantized (config dtype)" : o.dtype;
}

/** Loads with a progress bar on stderr. */
export async function loadModel(dir: string, o: CliOptions, io: Output): Promise<PreTrainedCausalLM> {
  const bar = progressBar("loading", io.err);
  const t0 = performance.now();
  const model = await AutoModelForCausalLM.fromPretrained(dir, {
    dtype: o.dtype,
    quantizationConfig: quantizationOf(o),
    deviceMap: deviceMapOf(o.device),
    onProgress: (p) => bar.update(p.loaded, p.total),
    onWarning: (m) => io.err.write(`warning: ${m}\n`),
  });
  bar.finish(`loaded ${describeLoad(o)} (${model.dtype}) on ${model.device} in ${(performance.now() - t0).toFixed(0)} ms · footprint ${formatBytes(model.getMemoryFootprint())}`);
  return model;
}

/** The prompt's token ids: the text with the tokenizer's special tokens, or the rendered chat template. */
export function promptIds(tok: PreTrainedTokenizer, o: CliOptions): number[] {
  if (o.chat !== null) {
    const messages = [...(o.system === null ? [] : [{ role: "system", content: o.system }]), { role: "user", content: o.chat }];
    return tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  }
  return tok.encode(o.prompt ?? "").inputIds[0] ?? [];
}

export function generationOptions(o: CliOptions): GenerateOptions {
  const g: GenerateOptions = { maxNewTokens: o.maxNewTokens, doSample: o.doSample };
  if (o.temperature !== undefined) g.temperature = o.temperature;
  if (o.topK !== undefined) g.topK = o.topK;
  if (o.topP !== undefined) g.topP = o.topP;
  if (o.minP !== undefined) g.minP = o.minP;
  if (o.repetitionPenalty !== undefined) g.repetitionPenalty = o.repetitionPenalty;
  if (o.seed !== undefined) g.seed = o.seed;
  return g;
}

/**
 * Streams the prompt and its completion to io.out and returns the stats line. The streamer decodes the prompt and the
 * new tokens together (TextStreamer with skip_prompt=False), so the first new token keeps the space a
 * SentencePiece decoder would strip from it on its own.
 */
export async function streamCompletion(model: PreTrainedCausalLM, tok: PreTrainedTokenizer, o: CliOptions, io: Output): Promise<string> {
  const ids = promptIds(tok, o);
  const stream = generateStream(model, ids, { ...generationOptions(o), tokenizer: tok, skipPrompt: false, skipSpecialTokens: true });
  for await (const piece of stream) io.out.write(piece);
  io.out.write("\n");
  return statsLine(stream.stats);
}

export async function runInference(dir: string, o: CliOptions, io: Output): Promise<void> {
  const tok = AutoTokenizer.fromPretrained(dir);
  const model = await loadModel(dir, o, io);
  try {
    const stats = await streamCompletion(model, tok, o, io);
    io.out.write(`\n${stats}\n`);
  } finally {
    model.dispose();
  }
}
