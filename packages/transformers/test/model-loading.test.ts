// Model loading beyond the happy path: sharded checkpoints, tied embeddings, device maps, skip lists, load options,
// and bad checkpoints — truncated files, bad headers, overlapping or out-of-range offsets, dtypes or shapes that
// disagree with config.json, missing / unexpected tensors, missing shards, a weight_map escaping the folder, unknown
// model_type or quant_method, broken quantization state. Each must throw a typed error naming the file and tensor,
// and a failed load must free everything it allocated.

import { closeSync, cpSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { memoryStats } from "@lowbit/kernels";
import { ArgumentError } from "@lowbit/dtypes";
import {
  AutoModelForCausalLM,
  BitsAndBytesConfig,
  ConfigError,
  ModelLoadError,
  SafetensorsError,
  defaultSkipModules,
  isSkippedModule,
  llamaArchitecture,
  loadConfig,
  readSafetensors,
  resolveDeviceMap,
  safetensorsLayout,
  serializeSafetensors,
  writeSafetensors,
  type PreTrainedCausalLM,
  type SafetensorsFormatDType,
  type SafetensorsWriteTensor,
} from "../src/index.js";
import { readJson, repoFixture } from "./helpers.js";

const TINY = repoFixture("tiny-llama");
const NF4_DIR = repoFixture("tiny-llama-bnb-nf4");
const INT8_DIR = repoFixture("tiny-llama-bnb-int8");
const PROMPT = readJson<{ input_ids: number[][] }>(join(TINY, "expected.json")).input_ids[0]!;

/** A copy of a fixture folder in a temp dir, for corrupting. */
function copyOf(src: string, dir: string): string {
  const dst = join(dir, "model");
  cpSync(src, dst, { recursive: true });
  return dst;
}

/** Rewrites a folder's model.safetensors from edited tensors. */
function rewrite(dir: string, edit: (t: Map<string, SafetensorsWriteTensor>) => void, file = "model.safetensors"): void {
  const { tensors } = readSafetensors(join(dir, file));
  const out = new Map<string, SafetensorsWriteTensor>([...tensors].map(([k, t]) => [k, { dtype: t.dtype, shape: [...t.shape], data: t.bytes }]));
  edit(out);
  writeSafetensors(join(dir, file), Object.fromEntries(out), { format: "pt" });
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const c = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  edit(c);
  writeFileSync(join(dir, "config.json"), JSON.stringify(c, null, 2));
}

/** The error fromPretrained rejects with (or fails the test when it resolves). */
async function loadError(dir: string, options: Parameters<typeof AutoModelForCausalLM.fromPretrained>[1] = {}): Promise<Error> {
  try {
    const m = await AutoModelForCausalLM.fromPretrained(dir, options);
    m.dispose();
  } catch (err) {
    return err as Error;
  }
  throw new Error(`fromPretrained(${dir}) loaded a model but an error was expected`);
}

function logitsOf(model: PreTrainedCausalLM, ids: number[] = PROMPT): Float32Array {
  const { logits } = model.forward({ inputIds: [ids] });
  const a = logits.toTypedArray() as Float32Array;
  logits.dispose();
  return a;
}

const cpuBefore = memoryStats("cpu").allocatedBytes;
afterAll(() => {
  // Every model and failed load in this file freed what it allocated.
  expect(memoryStats("cpu").allocatedBytes).toBe(cpuBefore);
});

describe("bad checkpoints give typed errors naming the file and tensor", () => {
  it("a truncated model.safetensors", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(TINY, tmp);
      const file = join(dir, "model.safetensors");
      truncateSync(file, readFileSync(file).length - 100);
      const err = await loadError(dir, { dtype: "float32" });
      expect(err).toBeInstanceOf(SafetensorsError);
      expect((err as SafetensorsError).file).toBe(file);
      expect((err as SafetensorsError).tensor).toBe("model.norm.weight");
      expect(err.message).toContain("run past the data region (1238172 bytes after the 2208-byte header)");
    });
  });

  it("a file shorter than the 8-byte header length", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(TINY, tmp);
      writeFileSync(join(dir, "model.safetensors"), Buffer.from([1, 2, 3]));
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(SafetensorsError);
      expect(err.message).toMatch(/truncated file: 3 bytes/);
    });
  });

  it("a header length past the end of the file", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(TINY, tmp);
      const file = join(dir, "model.safetensors");
      const fd = openSync(file, "r+");
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(50_000_000n);
      writeSync(fd, len, 0, 8, 0);
      closeSync(fd);
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(SafetensorsError);
      expect(err.message).toContain("header length 50000000 runs past the end of the file");
    });
  });

  it("overlapping and out-of-range data offsets", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(TINY, tmp);
      const file = join(dir, "model.safetensors");
      const bytes = readFileSync(file);
      const n = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8")) as Record<string, { data_offsets: number[] }>;
      const write = (h: unknown): void => {
        const json = Buffer.from(JSON.stringify(h).padEnd(n, " "));
        expect(json.length).toBe(n);
        writeFileSync(file, Buffer.concat([bytes.subarray(0, 8), json, bytes.subarray(8 + n)]));
      };
      const norm = header["model.norm.weight"]!;
      const [b, e] = norm.data_offsets as [number, number];
      write({ ...header, "model.norm.weight": { ...norm, data_offsets: [b - 2, e - 2] } });
      let err = await loadError(dir);
      expect(err).toBeInstanceOf(SafetensorsError);
      expect((err as SafetensorsError).tensor).toBeDefined();
      expect(err.message).toMatch(/overlap/);
      write({ ...header, "model.norm.weight": { ...norm, data_offsets: [b + 10_000_000, e + 10_000_000] } });
      err = await loadError(dir);
      expect(err).toBeInstanceOf(SafetensorsError);
      expect((err as SafetensorsError).tensor).toBe("model.norm.weight");
      expect(err.message).toMatch(/run past the data region/);
    });
  });

  it("a tensor whose dtype disagrees with the architecture", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(TINY, tmp);
      rewrite(dir, (t) => t.set("model.norm.weight", { dtype: "int16", shape: [128], data: new Int16Array(128) }));
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(ModelLoadError);
      expect((err as ModelLoadError).tensor).toBe("model.norm.weight");
      expect((err as ModelLoadError).file).toBe(join(dir, "model.safetensors"));
      expect(err.message).toContain("has dtype I16 but LlamaForCausalLM needs float32 or float16 or bfloat16 here");
    });
  });

  it("a tensor whose shape disagrees with config.json", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(TINY, tmp);
      editConfig(dir, (c) => {
        c["vocab_size"] = 1001;
      });
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(ModelLoadError);
      expect((err as ModelLoadError).tensor).toBe("model.embed_tokens.weight");
      expect(err.message).toMatch(/has shape \[1000, 128\] but .*config\.json implies \[1001, 128\]/);
    });
  });

  it("missing and unexpected tensors are listed", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(TINY, tmp);
      rewrite(dir, (t) => {
        t.delete("model.layers.1.mlp.up_proj.weight");
        t.set("model.layers.1.mlp.extra.weight", { dtype: "float32", shape: [2], data: new Float32Array(2) });
      });
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(ModelLoadError);
      const e = err as ModelLoadError;
      expect(e.missingKeys).toEqual(["model.layers.1.mlp.up_proj.weight"]);
      expect(e.unexpectedKeys).toEqual(["model.layers.1.mlp.extra.weight"]);
      expect(e.tensor).toBe("model.layers.1.mlp.up_proj.weight");
      expect(e.message).toContain('missing 1 key(s): "model.layers.1.mlp.up_proj.weight"; unexpected 1 key(s): "model.layers.1.mlp.extra.weight"');
    });
  });

  it("a missing shard and a weight_map escaping the folder", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = shardedCopy(tmp);
      const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string> };
      rmSync(join(dir, "model-00002-of-00002.safetensors"));
      let err = await loadError(dir);
      expect(err).toBeInstanceOf(SafetensorsError);
      expect(err.message).toMatch(/shard "model-00002-of-00002.safetensors" is missing/);
      index.weight_map["model.norm.weight"] = "../model-00001-of-00002.safetensors";
      writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
      err = await loadError(dir);
      expect(err).toBeInstanceOf(SafetensorsError);
      expect((err as SafetensorsError).tensor).toBe("model.norm.weight");
      expect(err.message).toMatch(/\.\.' path segment|outside the model folder/);
    });
  });

  it("a weight_map naming the wrong shard for a tensor", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = shardedCopy(tmp);
      const path = join(dir, "model.safetensors.index.json");
      const index = JSON.parse(readFileSync(path, "utf8")) as { weight_map: Record<string, string> };
      index.weight_map["lm_head.weight"] = index.weight_map["lm_head.weight"] === "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
      writeFileSync(path, JSON.stringify(index));
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(ModelLoadError);
      expect((err as ModelLoadError).file).toBe(path);
      expect((err as ModelLoadError).tensor).toBe("lm_head.weight");
    });
  });

  it("an unknown model_type and an unknown quant_method are ConfigErrors", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(TINY, tmp);
      editConfig(dir, (c) => {
        c["model_type"] = "gpt_neox";
      });
      let err = await loadError(dir);
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toContain('model_type "gpt_neox" is not supported');
      editConfig(dir, (c) => {
        c["model_type"] = "llama";
        c["quantization_config"] = { quant_method: "gptq", bits: 4 };
      });
      err = await loadError(dir);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).key).toBe("quantization_config.quant_method");
    });
  });

  it("a broken 4-bit quantization state and a non-row-major int8 weight_format", async () => {
    await withTempDirAsync(async (tmp) => {
      const nf4 = copyOf(NF4_DIR, tmp);
      const key = "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4";
      rewrite(nf4, (t) => {
        const json = new TextEncoder().encode('{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [128, 127]}');
        t.set(key, { dtype: "uint8", shape: [json.length], data: json });
      });
      let err = await loadError(nf4);
      expect(err).toBeInstanceOf(ModelLoadError);
      expect((err as ModelLoadError).tensor).toBe("model.layers.0.self_attn.q_proj.weight");
      expect(err.message).toMatch(/bad quantization state|quant_state shape/);

      const int8 = join(tmp, "int8");
      cpSync(INT8_DIR, int8, { recursive: true });
      rewrite(int8, (t) => t.set("model.layers.1.mlp.up_proj.weight_format", { dtype: "uint8", shape: [], data: Uint8Array.of(1) }));
      err = await loadError(int8);
      expect(err).toBeInstanceOf(ModelLoadError);
      expect((err as ModelLoadError).tensor).toBe("model.layers.1.mlp.up_proj.weight_format");
      expect(err.message).toContain("only weight_format 0 (row-major) can be loaded");
    });
  });

  it("packed 4-bit codes of the wrong size", async () => {
    await withTempDirAsync(async (tmp) => {
      const dir = copyOf(NF4_DIR, tmp);
      rewrite(dir, (t) => t.set("model.layers.1.mlp.down_proj.weight", { dtype: "uint8", shape: [100, 1], data: new Uint8Array(100) }));
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(ModelLoadError);
      expect((err as ModelLoadError).tensor).toBe("model.layers.1.mlp.down_proj.weight");
      expect(err.message).toContain("holds 100 bytes of packed 4-bit codes but [128, 344] needs 22016");
    });
  });

  it("a load aborted half-way (onProgress throws) frees everything", async () => {
    const before = memoryStats("cpu").allocatedBytes;
    const err = await loadError(TINY, {
      dtype: "float32",
      quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true }),
      onProgress: (p) => {
        if (p.loaded === 12) throw new Error("stop");
      },
    });
    expect(err.message).toBe("stop");
    expect(memoryStats("cpu").allocatedBytes).toBe(before);
  });

  it("bad options are ArgumentErrors", async () => {
    expect(await loadError(TINY, { dtype: "float64" as never })).toBeInstanceOf(ArgumentError);
    expect(await loadError(TINY, { deviceMap: "disk" as never })).toBeInstanceOf(ArgumentError);
    expect(await loadError(TINY, { deviceMap: "cuda:7" })).toBeInstanceOf(ArgumentError);
    expect(await loadError(TINY, { quantizationConfig: { loadIn4bit: true } as never })).toBeInstanceOf(ArgumentError);
    const unknown = await loadError(TINY, { torchDtype: "float32" } as never);
    expect(unknown).toBeInstanceOf(ArgumentError);
    expect(unknown.message).toContain('received the name "torchDtype"');
    expect(await loadError(join(TINY, "nope"))).toBeInstanceOf(ConfigError);
  });
});

describe("loading variants", () => {
  it("a sharded checkpoint loads to the same logits as the single file", async () => {
    const single = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32" });
    const want = logitsOf(single);
    single.dispose();
    await withTempDirAsync(async (tmp) => {
      const dir = shardedCopy(tmp);
      const progress: number[] = [];
      const m = await AutoModelForCausalLM.fromPretrained(dir, { dtype: "float32", onProgress: (p) => progress.push(p.loaded / p.total) });
      try {
        expect(logitsOf(m)).toEqual(want);
        expect(progress).toHaveLength(21);
        expect(progress[progress.length - 1]).toBe(1);
      } finally {
        m.dispose();
      }
    });
  });

  it("dtype auto keeps the checkpoint's bfloat16; float16 runs too", async () => {
    const bf16 = await AutoModelForCausalLM.fromPretrained(TINY);
    const f32 = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32" });
    const f16 = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float16" });
    try {
      expect(bf16.dtype).toBe("bfloat16");
      const { logits } = bf16.forward({ inputIds: [PROMPT] });
      expect(logits.dtype).toBe("bfloat16");
      const a = logits.toTypedArray() as Float32Array;
      logits.dispose();
      const ref = logitsOf(f32);
      const rel = (x: Float32Array): number => {
        let e = 0;
        let s = 0;
        for (let i = 0; i < x.length; i++) {
          e = Math.max(e, Math.abs(x[i]! - ref[i]!));
          s = Math.max(s, Math.abs(ref[i]!));
        }
        return e / s;
      };
      // bfloat16 keeps 8 mantissa bits, float16 11: errors of a few 2^-8 and 2^-11 relative.
      expect(rel(a)).toBeLessThan(5e-2);
      expect(rel(logitsOf(f16))).toBeLessThan(5e-3);
      expect(bf16.getMemoryFootprint()).toBe((f32.getMemoryFootprint() - 128) / 2 + 128);
    } finally {
      bf16.dispose();
      f32.dispose();
      f16.dispose();
    }
  });

  it("tied embeddings: lm_head shares embed_tokens, is never quantized, and is not saved", async () => {
    await withTempDirAsync(async (tmp) => {
      // Untied reference: lm_head.weight := embed_tokens.weight.
      const untied = copyOf(TINY, tmp);
      rewrite(untied, (t) => t.set("lm_head.weight", t.get("model.embed_tokens.weight")!));
      const tied = join(tmp, "tied");
      cpSync(untied, tied, { recursive: true });
      rewrite(tied, (t) => t.delete("lm_head.weight"));
      editConfig(tied, (c) => {
        c["tie_word_embeddings"] = true;
      });
      const a = await AutoModelForCausalLM.fromPretrained(untied, { dtype: "float32" });
      const b = await AutoModelForCausalLM.fromPretrained(tied, { dtype: "float32" });
      const q = await AutoModelForCausalLM.fromPretrained(tied, { dtype: "float32", quantizationConfig: new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4" }) });
      try {
        expect(logitsOf(b)).toEqual(logitsOf(a));
        // Shared weights count once.
        expect(b.getMemoryFootprint()).toBe(a.getMemoryFootprint() - 1000 * 128 * 4);
        const kinds = new Map([...q.namedModules()].map(([n, m]) => [n, m.constructor.name]));
        expect(kinds.get("lm_head")).toBe("PretrainedLinear");
        expect(kinds.get("model.layers.0.mlp.up_proj")).toBe("Linear4bit");
        const saved = join(tmp, "saved");
        q.savePretrained(saved);
        expect(readSafetensors(join(saved, "model.safetensors")).tensors.has("lm_head.weight")).toBe(false);
      } finally {
        a.dispose();
        b.dispose();
        q.dispose();
      }
    });
  });

  it("llmInt8SkipModules replaces the default skip list", async () => {
    const q = new BitsAndBytesConfig({ loadIn8bit: true, llmInt8SkipModules: ["mlp"] });
    const m = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float16", quantizationConfig: q });
    try {
      const kinds = new Map([...m.namedModules()].map(([n, x]) => [n, x.constructor.name]));
      // "mlp" matches no module name at its start or end, so every linear is quantized, lm_head included.
      expect(kinds.get("lm_head")).toBe("Linear8bitLt");
      expect(kinds.get("model.layers.0.mlp.gate_proj")).toBe("Linear8bitLt");
    } finally {
      m.dispose();
    }
    const spec = llamaArchitecture(loadConfig(TINY));
    expect(defaultSkipModules(spec)).toEqual(["lm_head"]);
    expect(isSkippedModule("model.layers.0.mlp.gate_proj", ["model.layers.0"])).toBe(true);
    expect(isSkippedModule("model.layers.10.mlp.gate_proj", ["model.layers.1\\."])).toBe(false);
    expect(isSkippedModule("model.layers.3.mlp.down_proj", ["down_proj"])).toBe(true);
    expect(isSkippedModule("model.layers.3.mlp.down_proj", ["model\\.layers\\.\\d+\\.mlp"])).toBe(true);
    expect(() => isSkippedModule("x", ["("])).toThrow(ArgumentError);
  });

  it("a pre-quantized checkpoint's own quantization_config wins over the one passed", async () => {
    const warnings: string[] = [];
    const m = await AutoModelForCausalLM.fromPretrained(NF4_DIR, {
      quantizationConfig: new BitsAndBytesConfig({ loadIn8bit: true }),
      onWarning: (w) => warnings.push(w),
    });
    try {
      expect(m.isLoadedIn4bit).toBe(true);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain("already has a quantization_config");
    } finally {
      m.dispose();
    }
  });
});

describe("device maps", () => {
  const units = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "lm_head"].map((name) => ({ name, bytes: 1000, tiedTo: null }));
  const devices = ["cpu", "cuda:0", "cuda:1"];

  it("resolves strings, Records (most specific key wins, integers are GPUs) and planners", () => {
    expect(resolveDeviceMap("cpu", units, { devices })).toEqual(Object.fromEntries(units.map((u) => [u.name, "cpu"])));
    expect(resolveDeviceMap("cuda", units, { devices })["model.layers.1"]).toBe("cuda:0");
    expect(resolveDeviceMap({ "": 0, "model.layers.1": "cuda:1", lm_head: "cpu" }, units, { devices })).toEqual({
      "model.embed_tokens": "cuda:0",
      "model.layers.0": "cuda:0",
      "model.layers.1": "cuda:1",
      "model.norm": "cuda:0",
      lm_head: "cpu",
    });
    expect(resolveDeviceMap({ model: "cuda:1", lm_head: "cuda:1", "model.layers.0.mlp": "cuda:1" }, units, { devices })["model.layers.0"]).toBe("cuda:1");
    const planned = resolveDeviceMap("auto", units, { devices, planner: (us) => Object.fromEntries(us.map((u, i) => [u.name, i < 2 ? "cuda:0" : "cuda:1"])) });
    expect(planned["model.layers.0"]).toBe("cuda:0");
    expect(planned["model.layers.1"]).toBe("cuda:1");
    // The built-in plan on a machine without a GPU.
    expect(resolveDeviceMap("auto", units, { devices: ["cpu"] })["lm_head"]).toBe("cpu");
  });

  it("rejects uncovered units, split units, unknown keys, offload and absent devices", () => {
    expect(() => resolveDeviceMap({ model: "cpu" }, units, { devices })).toThrowError(/no device for "lm_head"/);
    expect(() => resolveDeviceMap({ "": "cpu", "model.layers.0.mlp": "cuda:0" }, units, { devices })).toThrowError(/lives on one device/);
    expect(() => resolveDeviceMap({ "": "cpu", "model.decoder": "cpu" }, units, { devices })).toThrowError(/names no module/);
    expect(() => resolveDeviceMap({ "": "disk" }, units, { devices })).toThrowError(/offloading to disk/);
    expect(() => resolveDeviceMap({ "": "cuda:2" }, units, { devices })).toThrowError(ArgumentError);
  });

  it("a Record map on the CPU loads and runs", async () => {
    const m = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", deviceMap: { "model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu", lm_head: "cpu" } });
    try {
      expect(m.deviceMap["model.layers.1"]).toBe("cpu");
      expect(logitsOf(m).length).toBe(PROMPT.length * 1000);
    } finally {
      m.dispose();
    }
  });
});

describe("forward input validation", () => {
  it("names the argument, what was expected and what was received", async () => {
    const m = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32" });
    try {
      expect(() => m.forward({ inputIds: [[1, 2000]] })).toThrowError("Expected a token id in [0, 999] for forward's inputIds[0][1] but received 2000 (number)");
      expect(() => m.forward({ inputIds: [[1, 2], [3]] })).toThrowError(/ragged/);
      expect(() => m.forward({ inputIds: [[1, 2]], attentionMask: [[1, 1, 1]] })).toThrowError("forward: expected attentionMask of shape [1, 2] (0 cached + 2 new positions) but received [1, 3]");
      expect(() => m.forward({ inputIds: [[1, 2]], attentionMask: [[1, 2]] })).toThrowError(/Expected 0 or 1 for forward's attentionMask\[0\]\[1\]/);
      expect(() => m.forward({ inputIds: [[1, 2]], positionIds: [[0, -1]] })).toThrowError(/non-negative position/);
      const cache = m.createCache({ batchSize: 2, maxLength: 8 });
      expect(() => m.forward({ inputIds: [[1, 2]], cache })).toThrowError("forward: the cache holds a batch of 2 but inputIds has 1 rows");
      cache.dispose();
      expect(() => m.forward({ inputIds: [[1]], cache })).toThrowError(/cache was disposed/);
      expect(() => m.createCache({ batchSize: 0, maxLength: 8 })).toThrowError(ArgumentError);
    } finally {
      m.dispose();
    }
    expect(() => m.forward({ inputIds: [[1]] })).toThrowError(/model was disposed/);
  });
});

describe("the streaming safetensors writer", () => {
  it("lays files out exactly as serializeSafetensors (the Rust crate's layout)", () => {
    const tensors: Record<string, SafetensorsWriteTensor> = {
      "b.weight": { dtype: "float32", shape: [2, 3], data: new Float32Array(6).fill(1.5) },
      "a.weight": { dtype: "bfloat16", shape: [3], data: new Uint16Array([1, 2, 3]) },
      "a.codes": { dtype: "uint8", shape: [5, 1], data: new Uint8Array(5).fill(7) },
      "c.scale": { dtype: "int8", shape: [], data: Int8Array.of(-3) },
    };
    const want = serializeSafetensors(tensors, { format: "pt" });
    const st: Record<string, SafetensorsFormatDType> = { float32: "F32", bfloat16: "BF16", uint8: "U8", int8: "I8" };
    const items = Object.entries(tensors).map(([name, t]) => ({ name, st: st[t.dtype]!, shape: t.shape, byteLength: t.data.byteLength, data: t.data }));
    const { header, order, dataLength } = safetensorsLayout(items, { format: "pt" });
    const got = new Uint8Array(header.length + dataLength);
    got.set(header);
    let o = header.length;
    for (const t of order) {
      got.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), o);
      o += t.data.byteLength;
    }
    expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
  });
});

/** tiny-llama split into two shards with an index, as transformers writes them. */
function shardedCopy(tmp: string): string {
  const dir = copyOf(TINY, tmp);
  const { tensors } = readSafetensors(join(dir, "model.safetensors"));
  rmSync(join(dir, "model.safetensors"));
  const names = [...tensors.keys()];
  const weightMap: Record<string, string> = {};
  const shards = [names.slice(0, 11), names.slice(11)];
  shards.forEach((part, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    const out: Record<string, SafetensorsWriteTensor> = {};
    for (const n of part) {
      const t = tensors.get(n)!;
      out[n] = { dtype: t.dtype, shape: [...t.shape], data: t.bytes };
      weightMap[n] = file;
    }
    writeSafetensors(join(dir, file), out, { format: "pt" });
  });
  writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2));
  return dir;
}

/** A fresh temp folder for an async body, removed afterwards. */
async function withTempDirAsync(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "lowbit-model-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
