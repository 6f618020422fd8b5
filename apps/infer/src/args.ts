// lowbit-infer's command line: node:util parseArgs (strict: unknown flags and stray arguments are errors), then
// typed checks of every value. Any problem is a UsageError, which the CLI prints with a pointer to --help and turns
// into exit code 2.

import { parseArgs } from "node:util";

/** A bad command line: printed as is, exit code 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export type CliDType = "float32" | "bfloat16" | "float16";
const DTYPES: readonly CliDType[] = ["float32", "bfloat16", "float16"];

export interface CliOptions {
  /** True when lowbit-infer ran without arguments: the demo. */
  demo: boolean;
  help: boolean;
  version: boolean;
  /** Model folder; null = the bundled tiny-llama. */
  model: string | null;
  /** Raw prompt, or null with `chat`. */
  prompt: string | null;
  /** A user message rendered with the chat template. */
  chat: string | null;
  /** Optional system message for --chat. */
  system: string | null;
  loadIn4bit: boolean;
  loadIn8bit: boolean;
  quantType: "nf4" | "fp4";
  doubleQuant: boolean;
  /** 4-bit compute dtype (bitsandbytes default float32). */
  computeDtype: CliDType;
  /** Dtype of the unquantized weights; "auto" = config.json's. */
  dtype: CliDType | "auto";
  /** "cpu", "cuda:N" or "auto". */
  device: string;
  maxNewTokens: number;
  doSample: boolean;
  temperature: number | undefined;
  topK: number | undefined;
  topP: number | undefined;
  minP: number | undefined;
  repetitionPenalty: number | undefined;
  seed: number | undefined;
  memoryTable: boolean;
}

export const USAGE = `Usage: lowbit-infer [options]

Loads a Hugging Face causal LM (llama / mistral / qwen2 safetensors folder), optionally quantized with
bitsandbytes formats, and streams a completion. Without arguments it runs the demo on the bundled
tiny-llama: a memory table, a streamed NF4 completion and a perplexity comparison.

Model and loading
  --model <dir>             model folder (default: the bundled tiny-llama)
  --load-in-4bit            quantize linear layers to 4 bits while loading
  --load-in-8bit            quantize linear layers with LLM.int8 while loading
  --quant-type <nf4|fp4>    4-bit format (default nf4; needs --load-in-4bit)
  --double-quant            quantize the 4-bit absmax too (needs --load-in-4bit)
  --compute-dtype <dtype>   4-bit compute dtype: float32 (default), bfloat16, float16
  --dtype <dtype|auto>      dtype of unquantized weights (default auto: config.json's)
  --device <cpu|cuda[:N]|auto>  where to load (default cpu)
  --no-memory-table         skip the fp32 / bf16 / int8 / nf4 memory table

Prompt
  --prompt <text>           text to continue (default: "def main():\\n    ")
  --chat <message>          a user message, rendered with the model's chat template
  --system <message>        a system message for --chat

Generation (transformers' generate() parameters)
  --max-new-tokens <n>      default 64
  --do-sample               sample instead of greedy decoding
  --temperature <t>  --top-k <k>  --top-p <p>  --min-p <p>  --repetition-penalty <r>
  --seed <n>                seed of the sampler (deterministic per seed)

  -h, --help                this text
  --version                 print the version

Exit codes: 0 success, 1 runtime error, 2 bad command line.
`;

export const DEFAULT_PROMPT = "def main():\n    ";

function number(flag: string, raw: string | undefined, check: { integer?: boolean; min?: number; max?: number; exclusiveMin?: boolean }): number | undefined {
  if (raw === undefined) return undefined;
  const v = Number(raw.trim());
  const range = `${check.min === undefined ? "" : `${check.exclusiveMin ? ">" : "≥"} ${check.min}`}${check.max === undefined ? "" : ` and ≤ ${check.max}`}`;
  const what = `${check.integer ? "an integer" : "a number"}${range === "" ? "" : ` ${range}`}`;
  const bad = raw.trim() === "" || !Number.isFinite(v) || (check.integer === true && !Number.isSafeInteger(v));
  const low = check.min !== undefined && (check.exclusiveMin ? v <= check.min : v < check.min);
  const high = check.max !== undefined && v > check.max;
  if (bad || low || high) throw new UsageError(`${flag} expects ${what} but received ${JSON.stringify(raw)}`);
  return v;
}

function oneOf<T extends string>(flag: string, raw: string | undefined, allowed: readonly T[], fallback: T): T {
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) throw new UsageError(`${flag} expects one of ${allowed.join(", ")} but received ${JSON.stringify(raw)}`);
  return raw as T;
}

/** Parses argv (without node and the script); throws UsageError for anything wrong. */
export function parseCli(argv: readonly string[]): CliOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      allowNegative: true,
      options: {
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
        model: { type: "string" },
        prompt: { type: "string" },
        chat: { type: "string" },
        system: { type: "string" },
        "load-in-4bit": { type: "boolean" },
        "load-in-8bit": { type: "boolean" },
        "quant-type": { type: "string" },
        "double-quant": { type: "boolean" },
        "compute-dtype": { type: "string" },
        dtype: { type: "string" },
        device: { type: "string" },
        "max-new-tokens": { type: "string" },
        "do-sample": { type: "boolean" },
        temperature: { type: "string" },
        "top-k": { type: "string" },
        "top-p": { type: "string" },
        "min-p": { type: "string" },
        "repetition-penalty": { type: "string" },
        seed: { type: "string" },
        "memory-table": { type: "boolean", default: true },
      },
    });
  } catch (err) {
    // ERR_PARSE_ARGS_UNKNOWN_OPTION, ..._INVALID_OPTION_VALUE, ..._UNEXPECTED_POSITIONAL: node's message names the flag.
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  const loadIn4bit = v["load-in-4bit"] ?? false;
  const loadIn8bit = v["load-in-8bit"] ?? false;
  if (loadIn4bit && loadIn8bit) throw new UsageError("--load-in-4bit and --load-in-8bit exclude each other; choose one");
  if (!loadIn4bit) {
    for (const flag of ["quant-type", "double-quant", "compute-dtype"] as const) {
      if (v[flag] !== undefined) throw new UsageError(`--${flag} only applies to 4-bit loading; add --load-in-4bit`);
    }
  }
  if (v.prompt !== undefined && v.chat !== undefined) throw new UsageError("--prompt and --chat exclude each other; give one");
  if (v.system !== undefined && v.chat === undefined) throw new UsageError("--system needs --chat");
  for (const flag of ["model", "prompt", "chat", "device"] as const) {
    if (v[flag] !== undefined && v[flag].length === 0) throw new UsageError(`--${flag} needs a non-empty value`);
  }
  const device = v.device ?? "cpu";
  if (!/^(cpu|auto|cuda|cuda:\d+)$/.test(device)) throw new UsageError(`--device expects cpu, cuda, cuda:N or auto but received ${JSON.stringify(device)}`);
  return {
    demo: argv.length === 0,
    help: v.help ?? false,
    version: v.version ?? false,
    model: v.model ?? null,
    prompt: v.chat === undefined ? (v.prompt ?? DEFAULT_PROMPT) : null,
    chat: v.chat ?? null,
    system: v.system ?? null,
    loadIn4bit,
    loadIn8bit,
    quantType: oneOf("--quant-type", v["quant-type"], ["nf4", "fp4"] as const, "nf4"),
    doubleQuant: v["double-quant"] ?? false,
    computeDtype: oneOf("--compute-dtype", v["compute-dtype"], DTYPES, "float32"),
    dtype: oneOf("--dtype", v.dtype, [...DTYPES, "auto"] as const, "auto"),
    device: device === "cuda" ? "cuda:0" : device,
    maxNewTokens: number("--max-new-tokens", v["max-new-tokens"], { integer: true, min: 1 }) ?? 64,
    doSample: v["do-sample"] ?? false,
    temperature: number("--temperature", v.temperature, { min: 0, exclusiveMin: true }),
    topK: number("--top-k", v["top-k"], { integer: true, min: 0 }),
    topP: number("--top-p", v["top-p"], { min: 0, max: 1 }),
    minP: number("--min-p", v["min-p"], { min: 0, max: 1 }),
    repetitionPenalty: number("--repetition-penalty", v["repetition-penalty"], { min: 0, exclusiveMin: true }),
    seed: number("--seed", v.seed, { integer: true }),
    memoryTable: v["memory-table"] ?? true,
  };
}

/** Sampling flags that transformers ignores without do_sample (it warns; so does lowbit-infer). */
export function ignoredSamplingFlags(o: CliOptions): string[] {
  if (o.doSample) return [];
  const flags: [string, unknown][] = [
    ["--temperature", o.temperature],
    ["--top-k", o.topK],
    ["--top-p", o.topP],
    ["--min-p", o.minP],
    ["--seed", o.seed],
  ];
  return flags.filter(([, value]) => value !== undefined).map(([flag]) => flag);
}
