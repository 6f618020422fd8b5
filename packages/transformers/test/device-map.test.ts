// deviceMap through @lowbit/accelerate: the model description built from config.json (checked against accelerate's
// worked examples of spec A8 and against the bytes a loaded model really holds), the strategies "auto" / "balanced" /
// "balanced_low_0" / "sequential" planned on injected device inventories (CPU only, a fake GPU that fits or does not,
// two fake GPUs, bitsandbytes' × 0.9 budgets, quantized sizes), explicit Record maps, bad maps (DeviceMapError naming
// the module), fromPretrained end to end on the CPU, and — where a CUDA device exists — a forward pass whose layers
// are split between cuda:0 and the CPU.

import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ArgumentError } from "@lowbit/dtypes";
import {
  DeviceMapError,
  buildModelTree,
  computeModuleSizes,
  type DeviceInventory,
  type MaxMemoryInput,
  type ModelDescription,
  type ModuleNode,
} from "@lowbit/accelerate";
import { availableDevices } from "@lowbit/tensor";
import {
  AutoConfig,
  AutoModelForCausalLM,
  BitsAndBytesConfig,
  describeModel,
  llamaArchitecture,
  loadConfig,
  mistralArchitecture,
  noSplitModules,
  planAutoDeviceMap,
  readSafetensorsHeader,
  resolveDeviceMap,
  type ArchitectureSpec,
  type DeviceMapOption,
  type DeviceMapStrategy,
  type LlamaConfig,
  type MistralConfig,
  type ModelDType,
  type PlacementUnit,
  type PreTrainedCausalLM,
  type ResolveDeviceMapOptions,
} from "../src/index.js";
import { readJson, repoFixture } from "./helpers.js";

const TINY = repoFixture("tiny-llama");
const PROMPT = readJson<{ input_ids: number[][] }>(join(TINY, "expected.json")).input_ids[0]!;
const CUDA = availableDevices().includes("cuda:0");
const quietLogger = { warn: () => {}, info: () => {} };

/** A machine with these free GPU bytes (cuda:0, cuda:1, ...) and this much available host RAM. */
function machine(gpuFree: readonly number[], cpu = 1e12): DeviceInventory {
  return { gpus: gpuFree.map((f, index) => ({ index, freeBytes: f, totalBytes: f })), cpuAvailableBytes: cpu };
}

/** Devices resolveDeviceMap may use, matching a fake inventory. */
function devicesOf(inv: DeviceInventory): string[] {
  return ["cpu", ...inv.gpus.map((g) => `cuda:${g.index}`)];
}

interface Fixture {
  config: LlamaConfig;
  spec: ArchitectureSpec;
  model: ModelDescription;
  units: PlacementUnit[];
  /** accelerate's sizes of the description (bytes by module name). */
  sizes: Map<string, number>;
  dtype: ModelDType;
}

/** A Llama from config.json fields, described as fromPretrained describes it. */
function llama(raw: Record<string, unknown>, dtype: ModelDType, quant: BitsAndBytesConfig | null = null): Fixture {
  const config = AutoConfig.fromDict({ model_type: "llama", ...raw }) as LlamaConfig;
  const spec = llamaArchitecture(config);
  const q = (name: string) => {
    if (quant === null || name === "lm_head") return null;
    return quant.loadIn4bit ? { type: quant.bnb4bitQuantType, blocksize: 64, doubleQuant: quant.bnb4bitUseDoubleQuant } : { type: "int8" as const };
  };
  const model = describeModel(config, spec, { dtype, quant: q });
  const sizes = computeModuleSizes(model, { dtype });
  const units = spec.units.map((name) => ({ name, bytes: sizes.get(name) ?? 0, tiedTo: null }));
  return { config, spec, model, units, sizes, dtype };
}

/** resolveDeviceMap as the loader calls it for fixture `f`. */
function place(f: Fixture, option: DeviceMapOption, extra: ResolveDeviceMapOptions): Record<string, string> {
  return resolveDeviceMap(option, f.units, {
    model: f.model,
    noSplitModuleClasses: noSplitModules(f.spec),
    dtype: f.dtype,
    logger: quietLogger,
    ...extra,
  });
}

/** The error `fn` throws (fails the test when it returns). */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a throw");
}

/** Units grouped by device, in forward order. */
function byDevice(map: Record<string, string>, units: readonly PlacementUnit[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const u of units) (out[map[u.name]!] ??= []).push(u.name);
  return out;
}

// The tiny Llama of spec A8 (vocab 128, hidden 64, intermediate 128, 4 layers, 4 heads, 2 KV heads).
const A8 = { vocab_size: 128, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2 };
// Six layers of 147,968 B (float32) and a 65,536 B embedding: room to split.
const SIX = { vocab_size: 256, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 6, num_attention_heads: 4, num_key_value_heads: 2 };

describe("describeModel: the model as accelerate sees it", () => {
  it("reproduces accelerate's sizes and map for the tiny Llama of spec A8", () => {
    const f = llama(A8, "float16");
    // Sizes with dtype float16: E = 16,384, L = 73,984, total 328,864 (rotary buffers at 2 B by the min rule).
    expect(f.sizes.get("")).toBe(328864);
    expect(f.sizes.get("model.layers.0")).toBe(73984);
    expect(f.sizes.get("model.embed_tokens")).toBe(16384);
    expect(f.sizes.get("model.rotary_emb")).toBe(32);
    const context = {
      devices: ["cpu", "cuda:0"],
      strategy: "sequential" as const,
      model: f.model,
      noSplitModuleClasses: noSplitModules(f.spec),
      dtype: "float16",
      quantized: false,
      maxMemory: { 0: 238336, cpu: 147968 },
      inventory: machine([1e9]),
      quantizedSizes: "storage" as const,
      logger: quietLogger,
    };
    // The exact map (and key order) accelerate 1.15 returns for infer_auto_device_map on this model.
    expect(Object.entries(planAutoDeviceMap(f.units, context))).toEqual([
      ["model.embed_tokens", 0],
      ["model.layers.0", 0],
      ["model.layers.1", 0],
      ["model.layers.2", "cpu"],
      ["model.layers.3", "disk"],
      ["model.norm", "disk"],
      ["model.rotary_emb", "disk"],
      ["lm_head", "disk"],
    ]);
    // The loader cannot offload to disk: a DeviceMapError names the first module that would go there.
    const err = thrown(() => place(f, "sequential", { maxMemory: { 0: 238336, cpu: 147968 }, inventory: machine([1e9]), devices: ["cpu", "cuda:0"] }));
    expect(err).toBeInstanceOf(DeviceMapError);
    expect((err as DeviceMapError).moduleName).toBe("model.layers.3");
    expect((err as DeviceMapError).keys).toEqual(["model.layers.3", "model.norm", "model.rotary_emb", "lm_head"]);
    expect(err.message).toMatch(/deviceMap "sequential" puts "model.layers.3", .* on "disk".*not supported by the loader/);
  });

  it("ties lm_head to embed_tokens (0 bytes, placed together) and gives large embeddings the first GPU", () => {
    const f = llama({ ...A8, vocab_size: 4096, tie_word_embeddings: true }, "float16");
    expect(buildModelTree(f.model).tiedParameters).toEqual([["lm_head.weight", "model.embed_tokens.weight"]]);
    expect(f.sizes.get("lm_head") ?? 0).toBe(0);
    expect(f.sizes.get("")).toBe(820384);
    // Spec A8: sequential with { 0: E + 3L, 1: 1e9 } puts lm_head with embed_tokens on GPU 0.
    const inv = machine([1e9, 1e9]);
    const seq = place(f, "sequential", { maxMemory: { 0: 746240, 1: 1e9, cpu: 1e9 }, inventory: inv, devices: devicesOf(inv) });
    expect(byDevice(seq, f.units)).toEqual({
      "cuda:0": ["model.embed_tokens", "model.layers.0", "model.layers.1", "lm_head"],
      "cuda:1": ["model.layers.2", "model.layers.3", "model.norm"],
    });
    // accelerate's own balanced buffer skips GPU 0 here ({'': 1}, accelerate PR #3244); transformers 5's buffer (the
    // biggest leaf, the 524,288 B embedding) gives GPU 0 room for it: 820384 // 2 + 1.25 × 524288 = 1,065,552 B.
    const bal = place(f, "balanced", { maxMemory: { 0: 1e7, 1: 1e7, cpu: 1e9 }, inventory: inv, devices: devicesOf(inv) });
    expect(new Set(Object.values(bal))).toEqual(new Set(["cuda:0"]));
  });

  it("names every tensor of the checkpoint, in HF's module tree with HF's class names", () => {
    const config = loadConfig(TINY) as LlamaConfig;
    const spec = llamaArchitecture(config);
    const tree = buildModelTree(describeModel(config, spec, { dtype: "bfloat16" }));
    // state_dict keys (non-persistent rotary buffers excluded) are exactly the checkpoint's tensors.
    expect([...tree.stateKeys].sort()).toEqual([...readSafetensorsHeader(join(TINY, "model.safetensors")).tensors.keys()].sort());
    const cls = (name: string) => (tree.nodes.get(name) as ModuleNode).className;
    expect(cls("")).toBe("LlamaForCausalLM");
    expect(cls("model")).toBe("LlamaModel");
    expect(cls("model.layers")).toBe("ModuleList");
    expect(cls("model.layers.1")).toBe("LlamaDecoderLayer");
    expect(cls("model.layers.1.self_attn")).toBe("LlamaAttention");
    expect(cls("model.layers.1.mlp")).toBe("LlamaMLP");
    expect(cls("model.layers.1.mlp.act_fn")).toBe("SiLUActivation");
    expect(cls("model.norm")).toBe("LlamaRMSNorm");
    expect(cls("model.rotary_emb")).toBe("LlamaRotaryEmbedding");
    // Registration order: embed_tokens, layers, norm, rotary_emb; q, k, v, o; gate, up, down, act_fn.
    expect((tree.nodes.get("model") as ModuleNode).children.map((c) => c.name)).toEqual(["model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb"]);
    expect((tree.nodes.get("model.layers.0.mlp") as ModuleNode).children.map((c) => c.name.split(".").pop())).toEqual(["gate_proj", "up_proj", "down_proj", "act_fn"]);
    expect(noSplitModules(spec)).toEqual(["LlamaDecoderLayer"]);
    const mistral = AutoConfig.fromDict({ model_type: "mistral", ...A8 }) as MistralConfig;
    expect(noSplitModules(mistralArchitecture(mistral))).toEqual(["MistralDecoderLayer"]);
  });

  it("counts quantized layers at the bytes a loaded model holds", async () => {
    const config = loadConfig(TINY) as LlamaConfig;
    const spec = llamaArchitecture(config);
    const configs = [
      new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4", bnb4bitUseDoubleQuant: true }),
      new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "fp4" }),
      new BitsAndBytesConfig({ loadIn8bit: true }),
    ];
    for (const q of configs) {
      const f = llama(config.raw, "float32", q);
      const tree = buildModelTree(f.model);
      expect((tree.nodes.get("model.layers.0.self_attn.q_proj") as ModuleNode).className).toBe(q.loadIn4bit ? "Linear4bit" : "Linear8bitLt");
      expect((tree.nodes.get("lm_head") as ModuleNode).className).toBe("Linear"); // bitsandbytes' default skip list
      const loaded = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", quantizationConfig: q });
      try {
        const real = computeModuleSizes(loaded); // the tensors lowbit's Linear4bit / Linear8bitLt really hold
        // Linear8bitLt also holds weight_format (one uint8), which bitsandbytes' storage count leaves out.
        const extra = q.loadIn8bit ? 7 : 0; // 7 quantized linears per layer
        for (const unit of spec.units) {
          const layer = unit.startsWith("model.layers.");
          expect(real.get(unit)).toBe((f.sizes.get(unit) ?? 0) + (layer ? extra : 0));
        }
      } finally {
        loaded.dispose();
      }
      // transformers' count: 0.5 / 1 byte per quantized element, the quantization state not at all.
      const tf = computeModuleSizes(f.model, { dtype: "float32", quantizedSizes: "transformers" });
      const qProj = 128 * 128; // q_proj (out 4 × 32, in 128)
      expect(tf.get("model.layers.0.self_attn.q_proj")).toBe(q.loadIn4bit ? qProj / 2 : qProj);
    }
  });
});

describe("strategies on injected device inventories", () => {
  const strategies: DeviceMapStrategy[] = ["auto", "balanced", "balanced_low_0", "sequential"];

  it("a machine without a GPU puts everything on the CPU", () => {
    const f = llama(SIX, "float32");
    const inv = machine([], 1e9);
    for (const s of strategies) expect(new Set(Object.values(place(f, s, { inventory: inv, devices: ["cpu"] })))).toEqual(new Set(["cpu"]));
  });

  it("a fake GPU that fits takes the whole model", () => {
    const f = llama(SIX, "float32");
    const inv = machine([1e9]);
    for (const s of strategies) {
      const map = place(f, s, { inventory: inv, devices: devicesOf(inv) });
      expect(byDevice(map, f.units)).toEqual({ "cuda:0": f.spec.units });
    }
  });

  it("a fake GPU that does not fit takes the first layers; the rest goes to the CPU, never splitting a layer", () => {
    const f = llama(SIX, "float32");
    const E = f.sizes.get("model.embed_tokens")!;
    const L = f.sizes.get("model.layers.0")!;
    expect(L).toBeGreaterThan(E); // the reserve kept free on GPU 0 is one layer
    // "auto" with no maxMemory uses 90% of the free bytes; keep E + 3.5 L usable, so E + 2 L fit next to the reserve.
    const inv = machine([(E + 3.5 * L) / 0.9]);
    const map = place(f, "auto", { inventory: inv, devices: devicesOf(inv) });
    expect(byDevice(map, f.units)).toEqual({
      "cuda:0": ["model.embed_tokens", "model.layers.0", "model.layers.1"],
      cpu: ["model.layers.2", "model.layers.3", "model.layers.4", "model.layers.5", "model.norm", "lm_head"],
    });
    // The same with an explicit max_memory and the "sequential" strategy.
    const seq = place(f, "sequential", { maxMemory: { 0: E + 3.5 * L, cpu: "1GB" }, inventory: machine([1e9]), devices: ["cpu", "cuda:0"] });
    expect(seq).toEqual(map);
    // Budgets ending inside a layer never split it: the planned keys are units or coarser.
    for (let k = 0; k <= 8; k++) {
      const raw = planAutoDeviceMap(f.units, {
        devices: ["cpu", "cuda:0"],
        strategy: "sequential",
        model: f.model,
        noSplitModuleClasses: noSplitModules(f.spec),
        dtype: "float32",
        quantized: false,
        maxMemory: { 0: E + L + (k * L) / 2, cpu: 1e9 },
        inventory: inv,
        quantizedSizes: "storage",
        logger: quietLogger,
      });
      for (const key of Object.keys(raw)) expect(key).not.toMatch(/^model\.layers\.\d+\./);
    }
    // A GPU too small for the embedding is skipped altogether.
    const tiny = place(f, "auto", { maxMemory: { 0: "1KiB", cpu: "1GB" }, inventory: machine([1e9]), devices: ["cpu", "cuda:0"] });
    expect(new Set(Object.values(tiny))).toEqual(new Set(["cpu"]));
  });

  it("plans quantized models with their quantized sizes", () => {
    const f32 = llama(SIX, "float32");
    const nf4 = llama(SIX, "float32", new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4" }));
    expect(nf4.sizes.get("model.layers.0")!).toBeLessThan(f32.sizes.get("model.layers.0")! / 6);
    // A budget the float32 model needs to split but the NF4 model fits in (bnb's × 0.9 included).
    const budget = { 0: f32.sizes.get("")! / 2, cpu: "1GB" };
    const inv = machine([1e9]);
    const split = place(f32, "sequential", { maxMemory: budget, inventory: inv, devices: devicesOf(inv) });
    expect(new Set(Object.values(split))).toEqual(new Set(["cuda:0", "cpu"]));
    const whole = place(nf4, "sequential", { maxMemory: budget, inventory: inv, devices: devicesOf(inv), quantized: true });
    expect(new Set(Object.values(whole))).toEqual(new Set(["cuda:0"]));
  });

  it("bitsandbytes' adjust_max_memory leaves 90% of every budget", () => {
    const f = llama(SIX, "float32", new BitsAndBytesConfig({ loadIn8bit: true }));
    const inv = machine([1e9]);
    const onGpu = (gpu: number, quantized: boolean) => {
      const map = place(f, "sequential", { maxMemory: { 0: gpu, cpu: 1e9 }, inventory: inv, devices: devicesOf(inv), quantized });
      return f.units.filter((u) => map[u.name] === "cuda:0").length;
    };
    // The smallest GPU budget that holds the whole model without the adjustment (binary search on bytes).
    let lo = 0;
    let hi = 2 * f.sizes.get("")!;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (onGpu(mid, false) === f.units.length) hi = mid;
      else lo = mid;
    }
    expect(onGpu(hi, false)).toBe(f.units.length);
    expect(onGpu(hi, true)).toBeLessThan(f.units.length); // 0.9 × hi no longer holds it
    expect(onGpu(Math.ceil(hi / 0.9) + 1, true)).toBe(f.units.length);
  });

  it("spreads over two fake GPUs: balanced, balanced_low_0, sequential", () => {
    const f = llama(SIX, "float32");
    const inv = machine([1e9, 1e9]);
    const opts = { inventory: inv, devices: devicesOf(inv) };
    const balanced = byDevice(place(f, "balanced", opts), f.units);
    expect(Object.keys(balanced)).toEqual(["cuda:0", "cuda:1"]);
    expect(balanced["cuda:0"]!.length).toBeGreaterThan(2);
    expect(balanced["cuda:1"]!.length).toBeGreaterThan(2);
    expect(place(f, "auto", opts)).toEqual(place(f, "balanced", opts));
    // balanced_low_0 keeps GPU 0 as empty as it can (here: empty), for generate's activations.
    expect(byDevice(place(f, "balanced_low_0", opts), f.units)).toEqual({ "cuda:1": f.spec.units });
    // sequential fills GPU 0 first.
    expect(byDevice(place(f, "sequential", opts), f.units)).toEqual({ "cuda:0": f.spec.units });
  });

  it("refuses a model that would spill to disk, naming the module", () => {
    const f = llama(SIX, "float32");
    const E = f.sizes.get("model.embed_tokens")!;
    const L = f.sizes.get("model.layers.0")!;
    const err = thrown(() => place(f, "auto", { maxMemory: { cpu: E + 3 * L }, inventory: machine([]), devices: ["cpu"] }));
    expect(err).toBeInstanceOf(DeviceMapError);
    expect((err as DeviceMapError).moduleName).toBe("model.layers.2");
    expect(err.message).toContain('deviceMap "auto" puts "model.layers.2"');
  });

  it("a caller's planner replaces accelerate and sees the strategy and the description", () => {
    const f = llama(SIX, "float32");
    const seen: string[] = [];
    const map = place(f, "balanced_low_0", {
      devices: ["cpu", "cuda:0"],
      planner: (units, ctx) => {
        seen.push(ctx.strategy, String(buildModelTree(ctx.model).stateKeys.length), ctx.noSplitModuleClasses.join());
        return { "": "cpu", [units[0]!.name]: 0 };
      },
    });
    expect(seen).toEqual(["balanced_low_0", String(1 + 6 * 9 + 2), "LlamaDecoderLayer"]);
    expect(map["model.embed_tokens"]).toBe("cuda:0");
    expect(map["lm_head"]).toBe("cpu");
  });
});

describe("explicit and bad maps", () => {
  const f = llama(SIX, "float32");
  const devices = ["cpu", "cuda:0", "cuda:1"];
  const opts = { devices };

  it("resolves a Record map like transformers' device_map dict", () => {
    const map = place(f, { "model.embed_tokens": 0, "model.layers": "cuda:1", "model.layers.5": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", lm_head: "cuda" }, opts);
    expect(byDevice(map, f.units)).toEqual({
      "cuda:0": ["model.embed_tokens", "lm_head"],
      "cuda:1": ["model.layers.0", "model.layers.1", "model.layers.2", "model.layers.3", "model.layers.4"],
      cpu: ["model.layers.5", "model.norm"],
    });
    // Keys inside a unit are fine when they agree with it; tensor names are module names too.
    expect(place(f, { "": "cpu", "model.layers.0.mlp.act_fn": "cpu", "model.layers.1.self_attn.q_proj.weight": "cpu" }, opts)["model.layers.0"]).toBe("cpu");
    expect(place(f, 1, opts)["lm_head"]).toBe("cuda:1");
    expect(place(f, "cuda:1", opts)["model.norm"]).toBe("cuda:1");
  });

  it("bad maps are DeviceMapErrors naming the module", () => {
    const cases: Array<[DeviceMapOption, string, RegExp]> = [
      [{ model: "cpu" }, "lm_head", /gives no device for "lm_head"/],
      [{ "": "cpu", "model.layers.1.mlp": "cuda:0" }, "model.layers.1", /puts "model.layers.1.mlp" on cuda:0 but the rest of "model.layers.1" on cpu/],
      [{ "": "cpu", "model.layers.1.self_attn.q_proj.weight": 0 }, "model.layers.1", /lives on one device/],
      [{ "": "cpu", "model.decoder": "cpu" }, "model.decoder", /key "model.decoder" names no module/],
      [{ "": "cpu", "model.layers.0.mlp.gate": "cpu" }, "model.layers.0.mlp.gate", /names no module/],
      [{ "": "cpu", "model.layers.3": "disk" }, "model.layers.3", /offloading to disk is not supported/],
      [{ "": "meta" }, "", /offloading to meta is not supported/],
      [{ "": "cpu", lm_head: "cuda:3" }, "lm_head", /Expected an available device \(cpu, cuda:0, cuda:1\) for deviceMap\["lm_head"\]/],
      [{ "": "gpu0" }, "", /Expected "cpu", "cuda:N" or a GPU index for deviceMap\[""\] but received "gpu0"/],
      [{ "": -1 }, "", /GPU index/],
      ["disk", "", /offloading to disk/],
    ];
    for (const [map, module, message] of cases) {
      const err = thrown(() => place(f, map, opts));
      expect(err, JSON.stringify(map)).toBeInstanceOf(DeviceMapError);
      expect((err as DeviceMapError).moduleName, JSON.stringify(map)).toBe(module);
      expect(err.message).toMatch(message);
    }
    for (const bad of ["balanced_low_1", "gpu", [0], true]) {
      const err = thrown(() => place(f, bad as never, opts));
      expect(err).toBeInstanceOf(ArgumentError);
      expect(err.message).toContain('Expected "auto", "balanced", "balanced_low_0", "sequential", "cpu", "cuda:N", a GPU index or a Record');
    }
  });

  it("warns when a tied lm_head is put on another device than embed_tokens", () => {
    const tied = llama({ ...SIX, tie_word_embeddings: true }, "float32");
    const warnings: string[] = [];
    const map = resolveDeviceMap({ "": "cpu", lm_head: 0 }, tied.units, { model: tied.model, devices, logger: { warn: (m) => warnings.push(m) } });
    expect(map["lm_head"]).toBe("cuda:0");
    expect(warnings).toEqual([expect.stringMatching(/Tied parameters are on different devices: \{'lm_head.weight': 0, 'model.embed_tokens.weight': 'cpu'\}/)]);
  });
});

describe("fromPretrained with deviceMap strategies (CPU)", () => {
  /** Flat float32 logits of the prompt. */
  function logitsOf(m: PreTrainedCausalLM): Float32Array {
    const { logits } = m.forward({ inputIds: [PROMPT] });
    try {
      return logits.to("float32").toTypedArray() as Float32Array;
    } finally {
      logits.dispose();
    }
  }

  async function load(options: Parameters<typeof AutoModelForCausalLM.fromPretrained>[1]): Promise<{ map: Record<string, string>; logits: Float32Array }> {
    const m = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", onWarning: () => {}, ...options });
    try {
      return { map: { ...m.deviceMap }, logits: logitsOf(m) };
    } finally {
      m.dispose();
    }
  }

  it('"auto" on a CPU-only machine (or with a fake GPU too small for anything) loads on the CPU', async () => {
    const ref = await load({ deviceMap: "cpu" });
    for (const inventory of [machine([], 1e9), machine([1000], 1e9)]) {
      for (const deviceMap of ["auto", "balanced", "balanced_low_0", "sequential"] as const) {
        const got = await load({ deviceMap, deviceMapOptions: { inventory } });
        expect(new Set(Object.values(got.map))).toEqual(new Set(["cpu"]));
        expect(got.logits).toEqual(ref.logits);
      }
    }
  });

  it("quantized models plan with bitsandbytes sizes and load the same", async () => {
    const nf4 = new BitsAndBytesConfig({ loadIn4bit: true, bnb4bitQuantType: "nf4", bnb4bitUseDoubleQuant: true });
    const ref = await load({ deviceMap: "cpu", quantizationConfig: nf4 });
    const got = await load({ deviceMap: "auto", quantizationConfig: nf4, deviceMapOptions: { inventory: machine([], 1e9), quantizedSizes: "transformers" } });
    expect(got.logits).toEqual(ref.logits);
  });

  it("a Record map naming HF modules outside the units (rotary_emb) loads", async () => {
    const got = await load({ deviceMap: { "model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", lm_head: "cpu" } });
    expect(got.map["model.layers.1"]).toBe("cpu");
  });

  it("typed errors: no room without disk offload, a planned GPU this machine lacks, bad planning options", async () => {
    // bfloat16: embedding 256,000 B, layer 363,008 B; 1 MB keeps one layer in reserve and holds the embedding and layer 0.
    const spill = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: "sequential", maxMemory: { cpu: "1MB" }, deviceMapOptions: { inventory: machine([]) } }).catch((e: unknown) => e);
    expect(spill).toBeInstanceOf(DeviceMapError);
    expect((spill as Error).message).toMatch(/puts "model.layers.1", "model.norm", "model.rotary_emb", "lm_head" on "disk"/);
    const none = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: "auto", maxMemory: { cpu: "100KB" }, deviceMapOptions: { inventory: machine([]) } }).catch((e: unknown) => e);
    expect((none as Error).message).toMatch(/^deviceMap "auto" puts the whole model on "disk"/);
    if (!CUDA) {
      const absent = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: "auto", deviceMapOptions: { inventory: machine([1e9]) } }).catch((e: unknown) => e);
      expect(absent).toBeInstanceOf(DeviceMapError);
      expect((absent as Error).message).toContain('Expected an available device (cpu) for deviceMap "auto"[""] but received 0');
    }
    const badKey = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMapOptions: { inventry: machine([]) } as never }).catch((e: unknown) => e);
    expect(badKey).toBeInstanceOf(ArgumentError);
    expect((badKey as Error).message).toContain('received the name "inventry"');
    const badMem = await AutoModelForCausalLM.fromPretrained(TINY, { deviceMap: "auto", maxMemory: { cpu: "lots" } }).catch((e: unknown) => e);
    expect(badMem).toBeInstanceOf(ArgumentError);
    expect((badMem as Error).message).toContain('maxMemory["cpu"]');
  });
});

describe.runIf(CUDA)("a forward across cuda:0 and the CPU", () => {
  function maxRelError(a: Float32Array, b: Float32Array): number {
    let scale = 0;
    let err = 0;
    for (let i = 0; i < a.length; i++) {
      scale = Math.max(scale, Math.abs(b[i]!));
      err = Math.max(err, Math.abs(a[i]! - b[i]!));
    }
    return err / scale;
  }

  /**
   * Prefill + 4 decode steps through the cache: the logits of every step, flattened, and the tokens fed. Steps feed
   * `tokens` when given (so that two runs see the same inputs), else the greedy choice.
   */
  function run(m: PreTrainedCausalLM, tokens: number[] | null = null): { logits: Float32Array; tokens: number[] } {
    const cache = m.createCache({ batchSize: 1, maxLength: PROMPT.length + 4 });
    const out: number[] = [];
    const fed: number[] = [];
    try {
      let ids = [PROMPT];
      for (let step = 0; step < 5; step++) {
        const { logits } = m.forward({ inputIds: ids, cache, logitsToKeep: 1 });
        const row = logits.to("float32").toTypedArray() as Float32Array;
        logits.dispose();
        out.push(...row);
        let best = 0;
        for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
        const next = tokens?.[step] ?? best;
        fed.push(next);
        ids = [[next]];
      }
    } finally {
      cache.dispose();
    }
    return { logits: Float32Array.from(out), tokens: fed };
  }

  it("moves the hidden state between devices at layer boundaries", async () => {
    const ref = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", deviceMap: "cpu" });
    const maps: DeviceMapOption[] = [
      { "model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu", "model.norm": "cpu", lm_head: 0 },
      { "model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": 0, "model.norm": 0, lm_head: "cpu" },
    ];
    try {
      const want = run(ref);
      for (const deviceMap of maps) {
        const m = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", deviceMap });
        try {
          expect(new Set(Object.values(m.deviceMap))).toEqual(new Set(["cpu", "cuda:0"]));
          expect(maxRelError(run(m, want.tokens).logits, want.logits)).toBeLessThan(1e-4);
        } finally {
          m.dispose();
        }
      }
    } finally {
      ref.dispose();
    }
  });

  it('"auto" under a max_memory that holds one layer splits the real model between cuda:0 and the CPU', async () => {
    const f = llama(loadConfig(TINY).raw, "float32");
    const E = f.sizes.get("model.embed_tokens")!;
    const L = f.sizes.get("model.layers.0")!;
    const budget: MaxMemoryInput = { 0: Math.max(E, L) + E + L, cpu: "1GB" }; // the reserve, the embedding and layer 0
    const m = await AutoModelForCausalLM.fromPretrained(TINY, { dtype: "float32", deviceMap: "auto", maxMemory: budget });
    try {
      expect(m.deviceMap["model.embed_tokens"]).toBe("cuda:0");
      expect(m.deviceMap["lm_head"]).toBe("cpu");
      const { logits } = m.forward({ inputIds: [PROMPT] });
      expect(logits.device).toBe("cpu");
      logits.dispose();
    } finally {
      m.dispose();
    }
  });
});
