// perplexity(): the sliding-window perplexity of Hugging Face's "Perplexity of fixed-length models" guide, computed
// as the guide's code does: windows of at most `maxLength` tokens starting every `stride` tokens, labels −100 on
// the part of a window that earlier windows already scored, the model's mean loss per window (labels shifted by
// one inside), weighted by (valid labels − 1) and averaged: ppl = exp(Σ loss·n / Σ n). The weighting is the guide's
// (it subtracts the batch size for the internal shift even on windows whose first label is already −100); the sums
// are accumulated in float64 where the guide accumulates a float32 tensor.
// comparePerplexity() loads one checkpoint once per mode (fp32, bf16, fp16, nf4, fp4, int8) and reports each
// mode's memory footprint (transformers' get_memory_footprint) next to its perplexity.

import { crossEntropy, fromTypedArray, narrow, noGrad, tidy } from "@lowbit/tensor";
import { ArgumentError, ShapeError, describe } from "@lowbit/dtypes";
import { AutoModelForCausalLM } from "./auto.js";
import type { ModelDType } from "./config-base.js";
import type { DeviceMapOption } from "./device-map.js";
import type { CausalLM, GenerationCache } from "./generation/types.js";
import type { LoadProgress } from "./loader.js";
import { BitsAndBytesConfig } from "./quantization-config.js";
import { AutoTokenizer, type PreTrainedTokenizer } from "./tokenizer.js";

export interface PerplexityOptions {
  /** Window length in tokens. Default: the model's maxPositionEmbeddings. */
  maxLength?: number;
  /** Tokens between window starts (≤ maxLength). Default: maxLength (no overlap). */
  stride?: number;
  /** Called after each window with (tokens scored so far, total tokens). */
  onProgress?: (done: number, total: number) => void;
}

export interface PerplexityResult {
  /** exp(mean negative log-likelihood). */
  perplexity: number;
  /** The mean negative log-likelihood per scored token, nats. */
  meanNll: number;
  /** Tokens the guide counts (Σ (valid labels − 1) over windows). */
  scoredTokens: number;
  /** Length of the tokenized text (with the tokenizer's special tokens). */
  textTokens: number;
  windows: number;
}

function checkPositiveInt(v: unknown, name: string): number {
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new ArgumentError(`Expected a positive integer for ${name} but received ${describe(v)}`);
  return v as number;
}

/**
 * Perplexity of `model` on `text`, tokenized with `tokenizer` (special tokens added, as `tokenizer(text)` does).
 * @throws ArgumentError for bad options or a text shorter than 2 tokens
 */
export function perplexity<C extends GenerationCache>(model: CausalLM<C>, tokenizer: PreTrainedTokenizer, text: string, options: PerplexityOptions = {}): PerplexityResult {
  if (model === null || typeof model !== "object" || typeof model.forward !== "function") throw new ArgumentError(`Expected a causal LM for model but received ${describe(model)}`);
  if (tokenizer === null || typeof tokenizer !== "object" || typeof tokenizer.encode !== "function") throw new ArgumentError(`Expected a tokenizer for tokenizer but received ${describe(tokenizer)}`);
  if (typeof text !== "string") throw new ArgumentError(`Expected a string for text but received ${describe(text)}`);
  const ids = tokenizer.encode(text).inputIds[0] ?? [];
  return perplexityOfIds(model, ids, options);
}

/** perplexity() on already tokenized ids (T,). */
export function perplexityOfIds<C extends GenerationCache>(model: CausalLM<C>, ids: readonly number[], options: PerplexityOptions = {}): PerplexityResult {
  if (options === null || typeof options !== "object") throw new ArgumentError(`Expected an options object for options but received ${describe(options)}`);
  const maxLength = checkPositiveInt(options.maxLength ?? model.config.maxPositionEmbeddings, "maxLength");
  const stride = checkPositiveInt(options.stride ?? maxLength, "stride");
  if (stride > maxLength) throw new ArgumentError(`Expected stride ≤ maxLength (${maxLength}) so that every token is scored but received ${stride}`);
  if (maxLength < 2) throw new ArgumentError(`Expected maxLength ≥ 2 (a window needs a token to predict from) but received ${maxLength}`);
  if (!Array.isArray(ids) || ids.length < 2) throw new ArgumentError(`Expected a text of at least 2 tokens but received ${Array.isArray(ids) ? `${ids.length}` : describe(ids)}`);
  const V = model.config.vocabSize;
  for (const [i, id] of ids.entries()) {
    if (!Number.isSafeInteger(id) || id < 0 || id >= V) throw new ArgumentError(`Expected a token id in [0, ${V}) for ids[${i}] but received ${describe(id)}`);
  }
  const seqLen = ids.length;
  let nllSum = 0;
  let nTokens = 0;
  let prevEnd = 0;
  let windows = 0;
  for (let begin = 0; begin < seqLen; begin += stride) {
    const end = Math.min(begin + maxLength, seqLen);
    const trgLen = end - prevEnd; // may differ from stride on the last window
    const L = end - begin;
    const window = ids.slice(begin, end);
    // target_ids[:, :-trg_len] = -100, then the loss shifts: position i predicts label i + 1.
    const firstLabel = Math.max(0, L - trgLen);
    const shifted = new Int32Array(L - 1);
    for (let i = 0; i < L - 1; i++) shifted[i] = i + 1 >= firstLabel ? (window[i + 1] as number) : -100;
    const loss = tidy(() =>
      noGrad(() => {
        const input = fromTypedArray(Int32Array.from(window), [1, L], { dtype: "int32", device: model.device });
        const { logits } = model.forward({ inputIds: input }); // (1, L, V)
        if (logits.ndim !== 3 || logits.shape[0] !== 1 || logits.shape[1] !== L) {
          throw new ShapeError(`perplexity: expected the model's logits of shape [1, ${L}, vocab] but received [${logits.shape.join(", ")}]`);
        }
        const targets = fromTypedArray(shifted, [L - 1], { dtype: "int32", device: model.device });
        const pred = narrow(logits, 1, 0, L - 1).reshape([L - 1, logits.shape[2]!]); // (L − 1, V)
        return crossEntropy(pred, targets, { ignoreIndex: -100 }).item(); // mean over valid labels
      }),
    );
    const numValid = Math.min(trgLen, L); // (target_ids != -100).sum()
    const numLoss = numValid - 1; // the guide subtracts batch_size (1) for the internal shift
    nllSum += loss * numLoss;
    nTokens += numLoss;
    windows++;
    prevEnd = end;
    options.onProgress?.(end, seqLen);
    if (end === seqLen) break;
  }
  const meanNll = nllSum / nTokens;
  return { perplexity: Math.exp(meanNll), meanNll, scoredTokens: nTokens, textTokens: seqLen, windows };
}

/** How comparePerplexity loads the model: an unquantized dtype, or a bitsandbytes format. */
export type PerplexityMode = "fp32" | "bf16" | "fp16" | "nf4" | "fp4" | "int8";
export const PERPLEXITY_MODES: readonly PerplexityMode[] = ["fp32", "bf16", "fp16", "nf4", "fp4", "int8"];

export interface ComparePerplexityOptions extends Omit<PerplexityOptions, "onProgress"> {
  /** Default ["fp32", "bf16", "nf4", "int8"]. */
  modes?: readonly PerplexityMode[];
  /** Where to load (default "cpu"; "auto" lets the loader choose). */
  deviceMap?: DeviceMapOption;
  /**
   * Dtype of everything the quantized modes leave unquantized (embeddings, norms, lm_head) and the 4-bit compute
   * dtype. Default "float32", so that the quantized rows differ from the fp32 row by the quantization alone.
   */
  quantizedBaseDtype?: ModelDType;
  /** 4-bit double quantization (nested absmax), default true. */
  doubleQuant?: boolean;
  /** Called while a mode loads (tensors read) and after each evaluated window. */
  onProgress?: (event: { mode: PerplexityMode; stage: "load" | "eval"; done: number; total: number }) => void;
  /** Non-fatal loader notices; default: ignored. */
  onWarning?: (message: string) => void;
}

export interface PerplexityRow {
  mode: PerplexityMode;
  /** "float32", "bfloat16", "nf4 (double quant), compute float32", "LLM.int8 (threshold 6)". */
  description: string;
  /** transformers' get_memory_footprint(): parameters + buffers, bytes. */
  footprintBytes: number;
  perplexity: number;
  meanNll: number;
  loadMs: number;
  evalMs: number;
}

/**
 * The AutoModelForCausalLM.fromPretrained options of a mode: `base` is the dtype of what stays unquantized (and the
 * 4-bit compute dtype); `description` names the format for tables.
 */
export function loadModeOptions(
  mode: PerplexityMode,
  base: ModelDType = "float32",
  doubleQuant = true,
): { dtype: ModelDType; quantizationConfig: BitsAndBytesConfig | null; description: string } {
  if (!PERPLEXITY_MODES.includes(mode)) throw new ArgumentError(`Expected one of ${PERPLEXITY_MODES.join(", ")} for mode but received ${describe(mode)}`);
  switch (mode) {
    case "fp32":
      return { dtype: "float32", quantizationConfig: null, description: "float32" };
    case "bf16":
      return { dtype: "bfloat16", quantizationConfig: null, description: "bfloat16" };
    case "fp16":
      return { dtype: "float16", quantizationConfig: null, description: "float16" };
    case "nf4":
    case "fp4":
      return {
        dtype: base,
        quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: mode, bnb4bitUseDoubleQuant: doubleQuant, bnb4bitComputeDtype: base }),
        description: `${mode}${doubleQuant ? " + double quant" : ""}, compute ${base}`,
      };
    case "int8":
      return { dtype: base, quantizationConfig: new BitsAndBytesConfig({ loadIn8bit: true }), description: `LLM.int8, ${base}` };
  }
}

/**
 * Loads the checkpoint in `dir` once per mode and measures each one's footprint and perplexity on `text` (the
 * sliding-window perplexity above, same windows for every mode). Each model is freed before the next one loads.
 * @example
 * const rows = await comparePerplexity("./tiny-llama", text, { modes: ["bf16", "nf4", "int8"] });
 * console.log(formatPerplexityTable(rows));
 */
export async function comparePerplexity(dir: string, text: string, options: ComparePerplexityOptions = {}): Promise<PerplexityRow[]> {
  if (typeof dir !== "string") throw new ArgumentError(`Expected a model folder path for dir but received ${describe(dir)}`);
  if (typeof text !== "string") throw new ArgumentError(`Expected a string for text but received ${describe(text)}`);
  if (options === null || typeof options !== "object") throw new ArgumentError(`Expected an options object for options but received ${describe(options)}`);
  const modes = options.modes ?? ["fp32", "bf16", "nf4", "int8"];
  if (!Array.isArray(modes) || modes.length === 0 || !modes.every((m) => PERPLEXITY_MODES.includes(m))) {
    throw new ArgumentError(`Expected a non-empty list of modes (${PERPLEXITY_MODES.join(", ")}) for modes but received ${describe(modes)}`);
  }
  const base = options.quantizedBaseDtype ?? "float32";
  const tokenizer = AutoTokenizer.fromPretrained(dir);
  const ids = tokenizer.encode(text).inputIds[0] ?? [];
  const rows: PerplexityRow[] = [];
  for (const mode of modes) {
    const { dtype, quantizationConfig, description } = loadModeOptions(mode, base, options.doubleQuant ?? true);
    const t0 = performance.now();
    const model = await AutoModelForCausalLM.fromPretrained(dir, {
      dtype,
      quantizationConfig,
      deviceMap: options.deviceMap ?? "cpu",
      onProgress: (p: LoadProgress) => options.onProgress?.({ mode, stage: "load", done: p.loaded, total: p.total }),
      onWarning: options.onWarning ?? (() => undefined),
    });
    try {
      const t1 = performance.now();
      const r = perplexityOfIds(model, ids, {
        ...(options.maxLength === undefined ? {} : { maxLength: options.maxLength }),
        ...(options.stride === undefined ? {} : { stride: options.stride }),
        onProgress: (done, total) => options.onProgress?.({ mode, stage: "eval", done, total }),
      });
      rows.push({
        mode,
        description,
        footprintBytes: model.getMemoryFootprint(),
        perplexity: r.perplexity,
        meanNll: r.meanNll,
        loadMs: t1 - t0,
        evalMs: performance.now() - t1,
      });
    } finally {
      model.dispose();
    }
  }
  return rows;
}

function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(2)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

/** A plain-text table of comparePerplexity rows: mode, format, footprint (and its ratio to the first row), perplexity. */
export function formatPerplexityTable(rows: readonly PerplexityRow[]): string {
  const first = rows[0];
  const header = ["mode", "format", "footprint", "vs " + (first?.mode ?? ""), "perplexity", "Δ ppl"];
  const body = rows.map((r) => [
    r.mode,
    r.description,
    formatBytes(r.footprintBytes),
    first === undefined ? "" : `${(r.footprintBytes / first.footprintBytes).toFixed(2)}×`,
    r.perplexity.toFixed(4),
    first === undefined || r === first ? "" : `${r.perplexity >= first.perplexity ? "+" : ""}${(((r.perplexity - first.perplexity) / first.perplexity) * 100).toFixed(2)}%`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
