// Model benchmarks, printed in one run:
//   (a) tiny-llama (fixtures/tiny-llama) on the CPU in float32, NF4 and LLM.int8: load time, prefill tokens/s over a
//       prompt, greedy decode tokens/s at batch 1;
//   (b) a Mistral-7B-shaped model with seeded random weights (AutoModelForCausalLM.fromConfig; no files) in bfloat16,
//       NF4 + double quantization and LLM.int8 on a CUDA device: memory footprint, load-and-quantize time, greedy
//       decode tokens/s at batch 1 and 8, prefill tokens/s over 2048 positions. Without a CUDA device (b) prints why
//       it is skipped, unless --device cpu asks for it on the CPU (use the size flags to make that small).
// Run:  node --conditions=@lowbit/source --import tsx bench/models.bench.ts [flags]    (or: pnpm bench)
// Flags (all optional):
//   --part tiny|mistral|all   what to run (default all)
//   --device cuda:N|cpu       device of (b) (default cuda:0)
//   --hidden 4096 --intermediate 14336 --layers 32 --heads 32 --kv-heads 8 --vocab 32000   the shape of (b)
//   --variants bf16,nf4,int8  --batches 1,8  --prefill 2048  --decode-prompt 64  --decode-steps 32  --runs 2
//   --tiny-prompt 128 --tiny-steps 256 --tiny-runs 5
// Timings are the best of --runs (--tiny-runs for (a)) timed runs after one warm-up; every timed step ends with a device-to-host copy of the
// sampled tokens, so CUDA work is finished when the clock stops.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { getBinding } from "@lowbit/kernels";
import { availableDevices, type Tensor } from "@lowbit/tensor";
import { AutoModelForCausalLM, BitsAndBytesConfig, type PreTrainedCausalLM } from "../src/index.js";

// ---------------------------------------------------------------------------------------------- flags

const DEFAULTS = {
  part: "all",
  device: "cuda:0",
  hidden: 4096,
  intermediate: 14336,
  layers: 32,
  heads: 32,
  "kv-heads": 8,
  vocab: 32000,
  variants: "bf16,nf4,int8",
  batches: "1,8",
  prefill: 2048,
  "decode-prompt": 64,
  "decode-steps": 32,
  runs: 2,
  "tiny-prompt": 128,
  "tiny-steps": 256,
  "tiny-runs": 5,
};
type Flags = { -readonly [K in keyof typeof DEFAULTS]: (typeof DEFAULTS)[K] };

function usage(message: string): never {
  console.error(`models.bench: ${message}\nflags: ${Object.entries(DEFAULTS).map(([k, v]) => `--${k} ${v}`).join(" ")}`);
  process.exit(2);
}

function parseFlags(argv: readonly string[]): Flags {
  const flags: Flags = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) usage(`expected a --flag but received ${JSON.stringify(arg)}`);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
    if (!Object.prototype.hasOwnProperty.call(DEFAULTS, name)) usage(`unknown flag --${name}`);
    if (value === undefined) usage(`--${name} needs a value`);
    const key = name as keyof Flags;
    if (typeof DEFAULTS[key] === "number") {
      const n = Number(value);
      if (!Number.isSafeInteger(n) || n < 1) usage(`--${name} expects a positive integer but received ${JSON.stringify(value)}`);
      (flags as Record<string, unknown>)[key] = n;
    } else {
      (flags as Record<string, unknown>)[key] = value;
    }
  }
  if (!["tiny", "mistral", "all"].includes(flags.part)) usage(`--part expects tiny, mistral or all but received ${JSON.stringify(flags.part)}`);
  if (flags.device !== "cpu" && !/^cuda:\d+$/.test(flags.device)) usage(`--device expects cpu or cuda:N but received ${JSON.stringify(flags.device)}`);
  for (const v of list(flags.variants)) if (!["bf16", "nf4", "int8"].includes(v)) usage(`--variants expects bf16, nf4 and/or int8 but received ${JSON.stringify(v)}`);
  for (const b of list(flags.batches)) if (!Number.isSafeInteger(Number(b)) || Number(b) < 1) usage(`--batches expects positive integers but received ${JSON.stringify(b)}`);
  return flags;
}

function list(s: string): string[] {
  return s.split(",").map((x) => x.trim()).filter((x) => x !== "");
}

// ---------------------------------------------------------------------------------------------- measuring

const now = (): number => Number(process.hrtime.bigint()) / 1e9;
const size = (bytes: number): string => (bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(2)} MiB`);
const rate = (tokens: number, seconds: number): string => `${(tokens / seconds).toFixed(1)} tok/s`;

/** (B, T) token ids, deterministic, in [3, vocab). */
function tokenIds(batch: number, length: number, vocab: number, seed: number): number[][] {
  let s = seed >>> 0;
  return Array.from({ length: batch }, () =>
    Array.from({ length }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return 3 + (s % Math.max(1, vocab - 3));
    }),
  );
}

/** Greedy next tokens from logits (B, 1, V): argmax on the logits' device, then B integers copied to the host. */
function nextTokens(logits: Tensor): number[][] {
  const best = logits.argmax(-1); // (B, 1)
  try {
    return Array.from(best.toTypedArray() as ArrayLike<number | bigint>, (v) => [Number(v)]);
  } finally {
    best.dispose();
    logits.dispose();
  }
}

/** The smallest of the seconds `fn` reports over `runs` calls, after one warm-up call. */
function best(runs: number, fn: () => number): number {
  fn();
  let t = Infinity;
  for (let r = 0; r < runs; r++) t = Math.min(t, fn());
  return t;
}

/** Seconds to prefill B × T new positions into an empty cache, keeping the last position's logits (as generate does). */
function prefillSeconds(model: PreTrainedCausalLM, batch: number, length: number, runs: number): number {
  const ids = tokenIds(batch, length, model.config.vocabSize, 1);
  const cache = model.createCache({ batchSize: batch, maxLength: length });
  try {
    return best(runs, () => {
      cache.reset();
      const t0 = now();
      nextTokens(model.forward({ inputIds: ids, cache, logitsToKeep: 1 }).logits);
      return now() - t0;
    });
  } finally {
    cache.dispose();
  }
}

/** Seconds of `steps` greedy decode steps at batch B, after a `prompt`-token prefill and 2 untimed steps. */
function decodeSeconds(model: PreTrainedCausalLM, batch: number, prompt: number, steps: number, runs: number): number {
  const ids = tokenIds(batch, prompt, model.config.vocabSize, 2);
  const cache = model.createCache({ batchSize: batch, maxLength: prompt + steps + 2 });
  try {
    return best(runs, () => {
      cache.reset();
      let next = nextTokens(model.forward({ inputIds: ids, cache, logitsToKeep: 1 }).logits);
      for (let i = 0; i < 2; i++) next = nextTokens(model.forward({ inputIds: next, cache }).logits);
      const t0 = now();
      for (let i = 0; i < steps; i++) next = nextTokens(model.forward({ inputIds: next, cache }).logits);
      return now() - t0;
    });
  } finally {
    cache.dispose();
  }
}

/** Bytes allocated on `device` now (live storages). */
function allocated(device: string): number {
  return getBinding().memoryStats(device).allocatedBytes;
}

const QUANT: Readonly<Record<string, () => BitsAndBytesConfig | null>> = {
  f32: () => null,
  bf16: () => null,
  nf4: () => new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4", bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: "bfloat16" }),
  int8: () => new BitsAndBytesConfig({ loadIn8bit: true }),
};

let failures = 0;

/** Runs one variant; an error (a kernel missing on this device, out of memory) is printed and the run goes on. */
async function variant(label: string, fn: () => Promise<void> | void): Promise<void> {
  try {
    await fn();
  } catch (err) {
    failures++;
    console.log(`${label.padEnd(10)} FAILED: ${(err as Error).name}: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------- (a) tiny-llama, CPU

async function tinyLlama(flags: Flags): Promise<void> {
  const dir = fileURLToPath(new URL("../../../fixtures/tiny-llama/", import.meta.url));
  if (!existsSync(dir)) {
    console.log(`(a) tiny-llama: skipped, ${dir} not found`);
    return;
  }
  const P = flags["tiny-prompt"];
  const S = flags["tiny-steps"];
  const runs = flags["tiny-runs"];
  console.log(`(a) tiny-llama (fixtures/tiny-llama: 2 layers, hidden 128, vocab 1000) on cpu, ${getBinding().getNumThreads()} threads; prefill ${P} tokens, decode ${S} steps at batch 1, best of ${runs}`);
  for (const name of ["f32", "nf4", "int8"]) {
    // f32 and int8 run in float32; NF4 in float32 with a bfloat16 compute dtype would test the codec, not the model.
    const q = name === "nf4" ? new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4", bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: "float32" }) : QUANT[name]!();
    await variant(name, async () => {
      const t0 = now();
      const model = await AutoModelForCausalLM.fromPretrained(dir, { dtype: "float32", deviceMap: "cpu", quantizationConfig: q });
      const load = now() - t0;
      try {
        const prefill = prefillSeconds(model, 1, P, runs);
        const decode = decodeSeconds(model, 1, 16, S, runs);
        console.log(
          `${name.padEnd(10)} load ${(load * 1e3).toFixed(1).padStart(7)} ms   prefill ${rate(P, prefill).padStart(14)}   decode b1 ${rate(S, decode).padStart(12)}` +
            `   footprint ${(model.getMemoryFootprint() / 1e6).toFixed(2)} MB`,
        );
      } finally {
        model.dispose();
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------- (b) Mistral-7B shape

function mistralConfig(flags: Flags): Record<string, unknown> {
  return {
    model_type: "mistral",
    architectures: ["MistralForCausalLM"],
    hidden_size: flags.hidden,
    intermediate_size: flags.intermediate,
    num_hidden_layers: flags.layers,
    num_attention_heads: flags.heads,
    num_key_value_heads: flags["kv-heads"],
    vocab_size: flags.vocab,
    max_position_embeddings: 32768,
    rope_theta: 1000000.0,
    sliding_window: null,
    rms_norm_eps: 1e-5,
    dtype: "bfloat16",
  };
}

async function mistral(flags: Flags): Promise<void> {
  const device = flags.device;
  const binding = getBinding();
  if (device !== "cpu" && !availableDevices().includes(device)) {
    const reason = binding.cudaUnavailableReason();
    console.log(`(b) Mistral-7B-shaped model: skipped, no CUDA device ${device} (${reason ?? `the addon sees ${binding.cudaDeviceCount()} CUDA device(s)`}); pass --device cpu with small --hidden/--layers/... to run it on the CPU`);
    return;
  }
  const config = mistralConfig(flags);
  // cudaGemmBackend is newer than some builds of the addon's type declarations: ask for it only where it exists.
  const gemmBackend = (binding as Partial<{ cudaGemmBackend(device: string): string }>).cudaGemmBackend;
  const gemm = device !== "cpu" && typeof gemmBackend === "function" ? gemmBackend.call(binding, device) : "unknown";
  const info = device === "cpu" ? `cpu, ${binding.getNumThreads()} threads` : `${binding.deviceInfo(device).name} (${device}, gemm ${gemm})`;
  const H = flags.hidden;
  const params = flags.vocab * H * 2 + flags.layers * (2 * H * H + 2 * H * (H / flags.heads) * flags["kv-heads"] + 3 * H * flags.intermediate + 2 * H) + H;
  const batches = list(flags.batches).map(Number);
  console.log(
    `(b) Mistral-7B-shaped model, seeded random weights: hidden ${H}, intermediate ${flags.intermediate}, ${flags.layers} layers, ${flags.heads} heads, ` +
      `${flags["kv-heads"]} KV heads, vocab ${flags.vocab} (${params >= 1e9 ? `${(params / 1e9).toFixed(2)} B` : `${(params / 1e6).toFixed(2)} M`} parameters) on ${info}; ` +
      `prefill ${flags.prefill} at batch 1, decode ${flags["decode-steps"]} steps after a ${flags["decode-prompt"]}-token prompt, best of ${flags.runs}`,
  );
  for (const name of list(flags.variants)) {
    await variant(name, () => {
      const before = allocated(device);
      binding.resetPeakMemoryStats(device);
      const t0 = now();
      const model = AutoModelForCausalLM.fromConfig(config, { seed: 0, dtype: "bfloat16", deviceMap: device, quantizationConfig: QUANT[name]!() });
      if (device !== "cpu") binding.synchronize(device);
      const load = now() - t0;
      try {
        const held = allocated(device) - before;
        const peak = binding.memoryStats(device).peakBytes - before;
        const parts = [
          `load+quantize ${load.toFixed(2)} s`,
          `footprint ${size(model.getMemoryFootprint())} (with quant state ${size(model.getMemoryFootprint({ includeQuantizationState: true }))}; allocated ${size(held)}, peak while loading ${size(peak)})`,
        ];
        for (const b of batches) parts.push(`decode b${b} ${rate(b * flags["decode-steps"], decodeSeconds(model, b, flags["decode-prompt"], flags["decode-steps"], flags.runs))}`);
        parts.push(`prefill ${flags.prefill} ${rate(flags.prefill, prefillSeconds(model, 1, flags.prefill, flags.runs))}`);
        console.log(`${name.padEnd(10)} ${parts.join("   ")}`);
      } finally {
        model.dispose();
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------- main

const flags = parseFlags(process.argv.slice(2));
console.log(`@lowbit/transformers model benchmark, node ${process.version}, addon ${getBinding().version}`);
if (flags.part !== "mistral") await tinyLlama(flags);
if (flags.part !== "tiny") await mistral(flags);
if (failures > 0) process.exitCode = 1;
