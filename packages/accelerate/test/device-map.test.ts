// Spec A8's worked examples reproduced exactly (sizes, maps with key order, balanced budgets), plus the
// planner's rules around them: the largest-layer reserve, tied parameters, clean_device_map,
// "sequential" / "balanced" / "balanced_low_0" and fallback allocation.
import { describe, expect, it } from "vitest";

import {
  cleanDeviceMap,
  computeModuleSizes,
  deviceForName,
  findTiedParameters,
  getBalancedMemory,
  getMaxLayerSize,
  getModuleSizeWithTies,
  inferAutoDeviceMap,
  resolveDeviceMap,
  type DeviceId,
  type DeviceMap,
  type ModelDescription,
} from "../src/index.js";
import { inventory, recorder, tinyLlama } from "./fixtures.js";

const E = 16_384; // embed_tokens / lm_head, fp16
const L = 73_984; // one LlamaDecoderLayer, fp16
const NO_SPLIT = ["LlamaDecoderLayer"];
const entries = (m: DeviceMap): Array<[string, DeviceId]> => [...m];

describe("A8 tiny Llama sizes", () => {
  const model = tinyLlama();

  it("counts every prefix in float16 (min rule for the fp32 rotary buffers)", () => {
    const sizes = computeModuleSizes(model, { dtype: "float16" });
    expect(sizes.get("")).toBe(328_864);
    expect(sizes.get("model.embed_tokens")).toBe(E);
    expect(sizes.get("lm_head")).toBe(E);
    expect(sizes.get("model.layers.0")).toBe(L);
    expect(sizes.get("model.layers")).toBe(4 * L);
    expect(sizes.get("model.norm")).toBe(128);
    expect(sizes.get("model.rotary_emb")).toBe(32);
    expect(sizes.get("model.rotary_emb.inv_freq")).toBe(16);
    expect(sizes.get("model.layers.0.self_attn.k_proj.weight")).toBe(32 * 64 * 2);
    // act_fn owns no tensor, so it is no key (size 0), as in accelerate's defaultdict.
    expect(sizes.has("model.layers.0.mlp.act_fn")).toBe(false);
  });

  it("counts the model in its own dtype when no dtype is given", () => {
    expect(computeModuleSizes(model).get("")).toBe(164_432 * 4);
  });

  it("with accelerate's CustomDtype.INT4 as dtype: total 82,216 B, a layer 18,496 B", () => {
    const sizes = computeModuleSizes(model, { dtype: "int4" });
    expect(sizes.get("")).toBe(82_216);
    expect(sizes.get("model.layers.2")).toBe(18_496);
  });

  it("the largest layer is every decoder layer (ties reported)", () => {
    expect(getMaxLayerSize(model, { dtype: "float16", noSplitModuleClasses: NO_SPLIT })).toEqual({
      size: L,
      names: ["model.layers.0", "model.layers.1", "model.layers.2", "model.layers.3"],
    });
    // Without the no-split class the layer unit is a leaf Linear: gate/up/down (128×64) and the embeddings tie at 16,384.
    const leaves = getMaxLayerSize(model, { dtype: "float16" });
    expect(leaves.size).toBe(E);
    expect(leaves.names[0]).toBe("model.embed_tokens");
    expect(leaves.names.at(-1)).toBe("lm_head");
    expect(leaves.names).toHaveLength(2 + 4 * 3);
  });
});

describe("computeModuleSizes over a flat list of named tensors", () => {
  it("adds each size to every dotted prefix, applying the dtype rules per tensor", () => {
    const sizes = computeModuleSizes(
      [
        { name: "model.layers.0.weight", shape: [4, 8], dtype: "float32" },
        { name: "model.layers.0.ids", shape: [3], dtype: "int64" },
        { name: "model.mask", shape: [16], dtype: "bool" },
        { name: "head.weight", shape: [8, 8], dtype: "bfloat16", quant: { type: "nf4" } },
      ],
      { dtype: "float16", specialDtypes: { "model.mask": "float32" } },
    );
    expect([...sizes]).toEqual([
      ["", 64 + 24 + 64 + (32 + 4 + 64)],
      ["model", 64 + 24 + 64],
      ["model.layers", 88],
      ["model.layers.0", 88],
      ["model.layers.0.weight", 64], // float32 counted at the smaller float16
      ["model.layers.0.ids", 24], // integers are never cast
      ["model.mask", 64], // special dtype wins
      ["head", 100],
      ["head.weight", 100], // nf4 storage: 32 packed + 1 fp32 absmax + 16-entry code map
    ]);
  });

  it("rejects malformed entries", () => {
    expect(() => computeModuleSizes([{ name: "w", shape: [-1], dtype: "float32" }])).toThrow(
      'Expected an array of non-negative integers for computeModuleSizes\' named[0].shape ("w") but received Array(1)',
    );
    expect(() => computeModuleSizes([null as never])).toThrow("Expected { name, shape, dtype } for computeModuleSizes' named[0] but received null");
  });
});

describe("A8 map with GPU 0, cpu and disk", () => {
  it("reproduces accelerate's map exactly", () => {
    const log = recorder();
    const map = inferAutoDeviceMap(tinyLlama(), {
      maxMemory: { 0: 3 * L + E, cpu: 2 * L },
      noSplitModuleClasses: NO_SPLIT,
      dtype: "float16",
      inventory: inventory([1e9]),
      logger: log,
    });
    expect(entries(map)).toEqual([
      ["model.embed_tokens", 0],
      ["model.layers.0", 0],
      ["model.layers.1", 0],
      ["model.layers.2", "cpu"],
      ["model.layers.3", "disk"],
      ["model.norm", "disk"],
      ["model.rotary_emb", "disk"],
      ["lm_head", "disk"],
    ]);
    // GPU 0 is full (its budget minus the reserve is used, and the reserve is counted once it is left),
    // so the 32 B of rotary buffers on disk fit no GPU: accelerate warns.
    expect(log.warnings).toEqual([
      "Current model requires 32 bytes of buffer for offloaded layers, which seems does not fit any GPU's remaining memory. " +
        "If you are experiencing a OOM later, please consider using offloadBuffers: true.",
    ]);
  });

  it("fits GPU 0 exactly (<=): one byte less pushes layer 1 to the cpu", () => {
    const map = inferAutoDeviceMap(tinyLlama(), {
      maxMemory: { 0: 3 * L + E - 1, cpu: 2 * L },
      noSplitModuleClasses: NO_SPLIT,
      dtype: "float16",
      inventory: inventory([1e9]),
      logger: recorder(),
    });
    expect(map.get("model.layers.1")).toBe("cpu");
    expect(map.get("model.layers.0")).toBe(0);
  });

  it("logs, verbosely, each placement and why a device was left", () => {
    const log = recorder();
    inferAutoDeviceMap(tinyLlama(), {
      maxMemory: { 0: 3 * L + E, cpu: 2 * L },
      noSplitModuleClasses: NO_SPLIT,
      dtype: "float16",
      inventory: inventory([1e9]),
      logger: log,
      verbose: true,
    });
    expect(log.infos).toContain("Putting model.layers.1 (size=73984) (available=73984) on 0.");
    expect(log.infos).toContain("This module cannot be split, going to the next device.");
  });

  it("without no-split classes, decoder layers are split across devices", () => {
    const map = inferAutoDeviceMap(tinyLlama(), {
      maxMemory: { 0: 3 * L + E, cpu: 2 * L },
      dtype: "float16",
      inventory: inventory([1e9]),
      logger: recorder(),
    });
    const layer2 = [...map].filter(([k]) => k.startsWith("model.layers.2"));
    expect(new Set(layer2.map(([, v]) => v)).size).toBeGreaterThan(1);
  });

  it("puts everything on the only device when it fits: {'': 0}", () => {
    const map = inferAutoDeviceMap(tinyLlama(), { maxMemory: { 0: 1e7, cpu: 1e9 }, noSplitModuleClasses: NO_SPLIT, dtype: "float16", inventory: inventory([1e9]) });
    expect(entries(map)).toEqual([["", 0]]);
  });

  it("goes straight to disk when even the first layer is too big for GPU and cpu", () => {
    const map = inferAutoDeviceMap(tinyLlama(), { maxMemory: { 0: 100, cpu: 100 }, noSplitModuleClasses: NO_SPLIT, dtype: "float16", inventory: inventory([1e9]), logger: recorder() });
    expect(entries(map)).toEqual([["", "disk"]]);
  });
});

describe("A8 tied-embedding model", () => {
  const model = tinyLlama({ vocabSize: 4096, tieWordEmbeddings: true });
  const BIG_E = 524_288;

  it("finds the tied group and counts lm_head 0 B", () => {
    expect(findTiedParameters(model)).toEqual([["lm_head.weight", "model.embed_tokens.weight"]]);
    const sizes = computeModuleSizes(model, { dtype: "float16" });
    expect(sizes.get("")).toBe(820_384);
    expect(sizes.get("model.embed_tokens")).toBe(BIG_E);
    expect(sizes.has("lm_head")).toBe(false);
    expect(sizes.has("lm_head.weight")).toBe(false);
  });

  it("size with ties: the queue entry holding lm_head.weight adds its size minus the parameter's", () => {
    const sizes = computeModuleSizes(model, { dtype: "float16" });
    expect(getModuleSizeWithTies(["lm_head.weight"], BIG_E, sizes, ["model.layers", "lm_head"])).toEqual({ size: BIG_E, tiedModuleNames: ["lm_head"] });
    expect(getModuleSizeWithTies(["model.embed_tokens.weight"], 0, sizes, ["model.norm", "model"])).toEqual({ size: 820_384 - BIG_E, tiedModuleNames: ["model"] });
  });

  it("sequential-style: the tied lm_head follows embed_tokens onto GPU 0", () => {
    const map = inferAutoDeviceMap(model, {
      maxMemory: { 0: BIG_E + 3 * L, 1: 1e9, cpu: 1e9 },
      noSplitModuleClasses: NO_SPLIT,
      dtype: "float16",
      inventory: inventory([1e10, 1e10]),
    });
    expect(entries(map)).toEqual([
      ["model.embed_tokens", 0],
      ["lm_head", 0],
      ["model.layers.0", 0],
      ["model.layers.1", 0],
      ["model.layers.2", 1],
      ["model.layers.3", 1],
      ["model.norm", 1],
      ["model.rotary_emb", 1],
    ]);
  });

  it("get_balanced_memory → {0: 502672, 1: 1e7, cpu: 1e9}, and the map skips GPU 0 ({'': 1})", () => {
    const opts = { maxMemory: { 0: 1e7, 1: 1e7, cpu: 1e9 }, noSplitModuleClasses: NO_SPLIT, dtype: "float16", inventory: inventory([1e10, 1e10]) };
    const balanced = getBalancedMemory(model, opts);
    expect([...balanced]).toEqual([
      [0, 502_672],
      [1, 1e7],
      ["cpu", 1e9],
    ]);
    const map = inferAutoDeviceMap(model, { ...opts, maxMemory: balanced, logger: recorder() });
    expect(entries(map)).toEqual([["", 1]]);
    // "auto" and "balanced" are the same computation.
    expect(entries(resolveDeviceMap(model, "auto", { ...opts, logger: recorder() }))).toEqual([["", 1]]);
    expect(entries(resolveDeviceMap(model, "balanced", { ...opts, logger: recorder() }))).toEqual([["", 1]]);
  });

  it("logs why GPU 0 stayed empty (minimum assignment)", () => {
    const log = recorder();
    resolveDeviceMap(model, "balanced", { maxMemory: { 0: 1e7, 1: 1e7, cpu: 1e9 }, noSplitModuleClasses: NO_SPLIT, dtype: "float16", inventory: inventory([1e10, 1e10]), logger: log });
    expect(log.infos.at(-1)).toContain(`  - 0: ${BIG_E + L} bytes required`);
  });

  it("transformers' buffer rule (biggest leaf) keeps the embedding on GPU 0", () => {
    const balanced = getBalancedMemory(model, {
      maxMemory: { 0: 1e7, 1: 1e7, cpu: 1e9 },
      noSplitModuleClasses: NO_SPLIT,
      dtype: "float16",
      buffer: "transformers",
      inventory: inventory([1e10, 1e10]),
    });
    // 820384 // 2 + int(1.25 × 524288)
    expect(balanced.get(0)).toBe(410_192 + 655_360);
    const map = inferAutoDeviceMap(model, { maxMemory: balanced, noSplitModuleClasses: NO_SPLIT, dtype: "float16", inventory: inventory([1e10, 1e10]) });
    expect(deviceForName(map, "model.embed_tokens.weight")).toBe(0);
  });

  it("balanced_low_0 over three GPUs → {0: 0, 1: 502672, 2: 1e7} and the map {'': 2}", () => {
    const opts = { maxMemory: { 0: 1e7, 1: 1e7, 2: 1e7, cpu: 1e9 }, noSplitModuleClasses: NO_SPLIT, dtype: "float16", inventory: inventory([1e10, 1e10, 1e10]) };
    const balanced = getBalancedMemory(model, { ...opts, lowZero: true });
    expect([...balanced]).toEqual([
      [0, 0],
      [1, 502_672],
      [2, 1e7],
      ["cpu", 1e9],
    ]);
    expect(entries(resolveDeviceMap(model, "balanced_low_0", { ...opts, logger: recorder() }))).toEqual([["", 2]]);
  });

  it("balanced_low_0 with non-contiguous GPU ids uses the actual ids (upstream sums ids 1..n-1: accelerate #4297)", () => {
    // GPUs 1, 3 and 4: per_gpu = 820384 // 2 + 92480 = 502672 for GPU 3; GPU 4 keeps 1e7.
    // The low GPU is the first id (1): min(max(0, 820384 − (502672 + 1e7)), 1e7) = 0.
    const balanced = getBalancedMemory(model, {
      maxMemory: { 4: 1e7, 1: 1e7, 3: 1e7, cpu: 1e9 },
      noSplitModuleClasses: NO_SPLIT,
      dtype: "float16",
      lowZero: true,
      inventory: inventory([1e10, 1e10, 1e10, 1e10, 1e10]),
    });
    expect([...balanced]).toEqual([
      [1, 0],
      [3, 502_672],
      [4, 1e7],
      ["cpu", 1e9],
    ]);
    // With a small last GPU the low GPU takes the remainder: 820384 − (502672 + 200000) = 117712.
    const tight = getBalancedMemory(model, {
      maxMemory: { 1: 1e7, 3: 1e7, 4: 200_000, cpu: 1e9 },
      noSplitModuleClasses: NO_SPLIT,
      dtype: "float16",
      lowZero: true,
      inventory: inventory([1e10, 1e10, 1e10, 1e10, 1e10]),
    });
    expect(tight.get(1)).toBe(117_712);
  });

  it("sequential uses max_memory as given (no balancing)", () => {
    const map = resolveDeviceMap(model, "sequential", {
      maxMemory: { 0: BIG_E + 3 * L, 1: 1e9, cpu: 1e9 },
      noSplitModuleClasses: NO_SPLIT,
      dtype: "float16",
      inventory: inventory([1e10, 1e10]),
    });
    expect(map.get("model.layers.1")).toBe(0);
    expect(map.get("model.layers.2")).toBe(1);
  });
});

describe("get_balanced_memory reserves", () => {
  const model = tinyLlama();

  it("one GPU and no user max_memory: 90% of its free memory (PR #1798)", () => {
    const balanced = getBalancedMemory(model, { inventory: inventory([1_000_000], 5_000_000), dtype: "float16" });
    expect([...balanced]).toEqual([
      [0, 900_000],
      ["cpu", 5_000_000],
    ]);
  });

  it("one GPU with a user max_memory: kept as given", () => {
    const balanced = getBalancedMemory(model, { maxMemory: { 0: 1_000_000, cpu: 5_000_000 }, inventory: inventory([1e9]), dtype: "float16" });
    expect(balanced.get(0)).toBe(1_000_000);
  });

  it("no GPU: returned unchanged", () => {
    const balanced = getBalancedMemory(model, { inventory: inventory([], 5_000_000) });
    expect([...balanced]).toEqual([["cpu", 5_000_000]]);
  });

  it("GPUs with a 0 budget do not count; the last GPU keeps its budget", () => {
    // 328864 // 2 + int(1.25 × 73984) = 164432 + 92480 = 256912 for GPU 1; GPU 2 (last) keeps 1e7.
    const balanced = getBalancedMemory(model, { maxMemory: { 0: 0, 1: 1e7, 2: 1e7, cpu: 1e9 }, noSplitModuleClasses: NO_SPLIT, dtype: "float16", inventory: inventory([1, 1, 1]) });
    expect([...balanced]).toEqual([
      [0, 0],
      [1, 256_912],
      [2, 1e7],
      ["cpu", 1e9],
    ]);
  });

  it("without no-split classes the buffer is 1.25 × the mean final module", () => {
    // 40 final modules share 328,864 B: mean int(8221.6) = 8221; 328864 // 2 + int(1.25 × 8221) = 164432 + 10276.
    const balanced = getBalancedMemory(model, { maxMemory: { 0: 1e7, 1: 1e7, cpu: 1e9 }, dtype: "float16", inventory: inventory([1, 1]) });
    expect(balanced.get(0)).toBe(164_432 + 10_276);
  });
});

describe("clean_device_map", () => {
  it("collapses a map whose entries share one device to {'': device}", () => {
    const map: DeviceMap = new Map<string, DeviceId>([
      ["model.embed_tokens", "cpu"],
      ["model.layers.0", "cpu"],
      ["lm_head", "cpu"],
    ]);
    expect([...cleanDeviceMap(map)]).toEqual([["", "cpu"]]);
  });

  it("merges a prefix and moves it to the end, as Python's dict does", () => {
    const map: DeviceMap = new Map<string, DeviceId>([
      ["model.layers.0.self_attn", 0],
      ["model.layers.0.mlp", 0],
      ["model.layers.1", 1],
      ["lm_head", 1],
    ]);
    expect([...cleanDeviceMap(map)]).toEqual([
      ["model.layers.1", 1],
      ["lm_head", 1],
      ["model.layers.0", 0],
    ]);
  });

  it("does not merge a prefix that is only a string prefix (layers.1 vs layers.10)", () => {
    const map: DeviceMap = new Map<string, DeviceId>([
      ["layers.1", 0],
      ["layers.10", 1],
    ]);
    expect([...cleanDeviceMap(map)]).toEqual([
      ["layers.1", 0],
      ["layers.10", 1],
    ]);
  });
});

describe("tied parameters during placement", () => {
  // A root with a big tied head listed before the embedding's owner: the head's weight is the second
  // name, so it counts 0 and must land with its owner.
  const model: ModelDescription = {
    className: "Toy",
    children: [
      ["encoder", { className: "Block", children: { emb: { className: "Embedding", parameters: { weight: { shape: [1000], dtype: "float32" } } }, ff: { className: "Linear", parameters: { weight: { shape: [500], dtype: "float32" } } } } }],
      ["decoder", { className: "Block", children: { ff: { className: "Linear", parameters: { weight: { shape: [500], dtype: "float32" } } } } }],
      ["head", { className: "Linear", parameters: { weight: { shape: [1000], dtype: "float32" } } }],
    ],
    tiedParameters: [["head.weight", "encoder.emb.weight"]],
  };

  it("assigns the tied head (listed last) to the device of its owner", () => {
    const map = inferAutoDeviceMap(model, { maxMemory: { 0: 6000, 1: 1e6, cpu: 1e6 }, inventory: inventory([1e9, 1e9]) });
    // Sizes: emb 4000, encoder.ff 2000, decoder 2000, head 0. GPU 0 keeps 2000 free (largest remaining layer).
    expect(entries(map)).toEqual([
      ["encoder.emb", 0],
      ["head", 0],
      ["encoder.ff", 1],
      ["decoder", 1],
    ]);
  });

  it("splits a splittable tied entry when the module fits alone but not with its ties", () => {
    // emb.weight (owner, 400 B) is tied to decoder.out.weight (second name, 0 B) inside a splittable
    // decoder block (20,000 B); a 40,000-B tail keeps the GPU 0 reserve at 40,000.
    const tiedDeep: ModelDescription = {
      className: "Toy",
      children: [
        ["emb", { className: "Embedding", parameters: { weight: { shape: [100], dtype: "float32" } } }],
        [
          "decoder",
          {
            className: "Block",
            children: {
              out: { className: "Linear", parameters: { weight: { shape: [100], dtype: "float32" } } },
              big: { className: "Linear", parameters: { weight: { shape: [5000], dtype: "float32" } } },
            },
          },
        ],
        ["tail", { className: "Linear", parameters: { weight: { shape: [10_000], dtype: "float32" } } }],
      ],
      tiedParameters: [["decoder.out.weight", "emb.weight"]],
    };
    // GPU 0 usable = 41,000 − 40,000 = 1,000: emb fits alone but not with the whole decoder (20,400),
    // so the decoder is split and only decoder.out joins emb.
    const map = inferAutoDeviceMap(tiedDeep, { maxMemory: { 0: 41_000, cpu: 1e6 }, inventory: inventory([1e9]), logger: recorder() });
    expect(entries(map)).toEqual([
      ["emb", 0],
      ["decoder.out", 0],
      ["decoder.big", "cpu"],
      ["tail", "cpu"],
    ]);
  });
});

describe("fallback allocation", () => {
  // A big first block that does not fit GPU 0 once the reserve is taken, then a small and a medium one.
  const model: ModelDescription = {
    className: "Toy",
    children: [
      ["big", { className: "Block", parameters: { w: { shape: [2000], dtype: "float32" } } }],
      ["a", { className: "Block", parameters: { w: { shape: [25], dtype: "float32" } } }],
      ["b", { className: "Block", parameters: { w: { shape: [100], dtype: "float32" } } }],
    ],
  };
  const opts = { maxMemory: { 0: 8200, cpu: 1e6 }, inventory: inventory([1e9]) };

  it("without it, GPU 0 stays empty (modules are placed strictly in order)", () => {
    // big (8,000 B) vs GPU 0 usable 8,200 − 400 (largest remaining layer b) = 7,800.
    expect(entries(inferAutoDeviceMap(model, { ...opts, logger: recorder() }))).toEqual([["", "cpu"]]);
  });

  it("with it, a later module that fits under budget − max(reserve, size) moves onto GPU 0 first", () => {
    // limit = 8,200 − max(400, 8,000) = 200: a (100 B) qualifies, b (400 B) does not.
    const map = inferAutoDeviceMap(model, { ...opts, fallbackAllocation: true, logger: recorder() });
    expect(entries(map)).toEqual([
      ["a", 0],
      ["big", "cpu"],
      ["b", "cpu"],
    ]);
  });
});
