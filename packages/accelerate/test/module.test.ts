// Planning from a live @lowbit/tensor Module: the walked tree (class names from constructors, tied
// parameters found by tensor identity, non-persistent buffers) gives the same sizes and maps as the
// equivalent ModelDescription; quantized sizes of a description match real Linear4bit / Linear8bitLt
// modules.
import { afterAll, describe, expect, it } from "vitest";

import { Embedding, Linear, Linear4bit, Linear8bitLt, Module, RMSNorm, randn, zeros } from "@lowbit/tensor";

import { buildModelTree, checkDeviceMap, computeModuleSizes, findTiedParameters, inferAutoDeviceMap, type ModelDescription } from "../src/index.js";
import { inventory, tinyLlama } from "./fixtures.js";

// Modules named like transformers' classes, so that no-split classes and sizes line up with tinyLlama().
class SiLUActivation extends Module {}
class LlamaAttention extends Module {
  constructor(H: number, heads: number, kv: number) {
    super();
    const hd = H / heads;
    this.registerModule("q_proj", new Linear(H, heads * hd, { bias: false }));
    this.registerModule("k_proj", new Linear(H, kv * hd, { bias: false }));
    this.registerModule("v_proj", new Linear(H, kv * hd, { bias: false }));
    this.registerModule("o_proj", new Linear(heads * hd, H, { bias: false }));
  }
}
class LlamaMLP extends Module {
  constructor(H: number, I: number) {
    super();
    this.registerModule("gate_proj", new Linear(H, I, { bias: false }));
    this.registerModule("up_proj", new Linear(H, I, { bias: false }));
    this.registerModule("down_proj", new Linear(I, H, { bias: false }));
    this.registerModule("act_fn", new SiLUActivation());
  }
}
class LlamaDecoderLayer extends Module {
  constructor(H: number, I: number) {
    super();
    this.registerModule("self_attn", new LlamaAttention(H, 4, 2));
    this.registerModule("mlp", new LlamaMLP(H, I));
    this.registerModule("input_layernorm", new RMSNorm(H));
    this.registerModule("post_attention_layernorm", new RMSNorm(H));
  }
}
class ModuleList extends Module {}
class LlamaRotaryEmbedding extends Module {
  constructor(hd: number) {
    super();
    this.registerBuffer("inv_freq", zeros([hd / 2]), { persistent: false });
    this.registerBuffer("original_inv_freq", zeros([hd / 2]), { persistent: false });
  }
}
class LlamaModel extends Module {
  constructor(V: number, H: number, I: number, L: number) {
    super();
    this.registerModule("embed_tokens", new Embedding(V, H));
    const layers = this.registerModule("layers", new ModuleList());
    for (let i = 0; i < L; i++) layers.registerModule(String(i), new LlamaDecoderLayer(H, I));
    this.registerModule("norm", new RMSNorm(H));
    this.registerModule("rotary_emb", new LlamaRotaryEmbedding(H / 4));
  }
}
class LlamaForCausalLM extends Module {
  constructor(V: number, tie: boolean) {
    super();
    const model = this.registerModule("model", new LlamaModel(V, 64, 128, 4));
    const head = this.registerModule("lm_head", new Linear(64, V, { bias: false }));
    // Tying registers the embedding's tensor as the head's weight: one Tensor under two names.
    if (tie) head.registerParameter("weight", model.child("embed_tokens").param("weight"));
  }
}

const untied = new LlamaForCausalLM(128, false);
const tied = new LlamaForCausalLM(4096, true);
afterAll(() => {
  untied.dispose();
  // The tied tensor is owned twice; disposing a tensor twice is a no-op.
  tied.dispose();
});

const opts = { dtype: "float16", noSplitModuleClasses: ["LlamaDecoderLayer"], inventory: inventory([1e9, 1e9]), logger: { warn() {}, info() {} } };

describe("a Module as the model", () => {
  it("walks class names, tensors and persistence", () => {
    const tree = buildModelTree(untied);
    expect(tree.root.className).toBe("LlamaForCausalLM");
    const layer = tree.nodes.get("model.layers.0");
    expect(layer?.kind === "module" && layer.className).toBe("LlamaDecoderLayer");
    const inv = tree.nodes.get("model.rotary_emb.inv_freq");
    expect(inv?.kind === "tensor" && !inv.persistent).toBe(true);
    expect(tree.stateKeys).not.toContain("model.rotary_emb.inv_freq");
    expect(tree.stateKeys).toContain("lm_head.weight");
  });

  it("gives the same sizes (keys, values, order) as the description", () => {
    // The description's RMSNorm class name differs (LlamaRMSNorm vs RMSNorm); sizes do not depend on it.
    expect([...computeModuleSizes(untied, { dtype: "float16" })]).toEqual([...computeModuleSizes(tinyLlama(), { dtype: "float16" })]);
  });

  it("finds ties by tensor identity and plans the A8 tied example identically", () => {
    expect(findTiedParameters(tied)).toEqual([["lm_head.weight", "model.embed_tokens.weight"]]);
    expect(computeModuleSizes(tied, { dtype: "float16" }).get("")).toBe(820_384);
    const maxMemory = { 0: 524_288 + 3 * 73_984, 1: 1e9, cpu: 1e9 };
    const fromModule = inferAutoDeviceMap(tied, { ...opts, maxMemory });
    const fromDescription = inferAutoDeviceMap(tinyLlama({ vocabSize: 4096, tieWordEmbeddings: true }), { ...opts, maxMemory });
    expect([...fromModule]).toEqual([...fromDescription]);
    expect(fromModule.get("lm_head")).toBe(0);
  });

  it("checks device maps against the Module's state dict", () => {
    expect(() => checkDeviceMap(untied, { model: 0 })).toThrow("The device map provided does not give any device for the following parameters: lm_head.weight");
    expect([...checkDeviceMap(untied, { model: 0, lm_head: "cpu" })]).toEqual([
      ["model", 0],
      ["lm_head", "cpu"],
    ]);
  });
});

describe("quantized sizes", () => {
  const N = 96;
  const K = 200; // 19,200 elements: 300 blocks of 64, a partial nested block

  function quantModel(layer: Module): Module {
    const root = new (class QuantRoot extends Module {})();
    root.registerModule("proj", layer);
    return root;
  }

  it.each([false, true])("nf4 (double quant %s): a description's 'storage' size equals the Linear4bit module's bytes", (doubleQuant) => {
    const w = randn([N, K]);
    const layer = Linear4bit.fromFloat(w, { quantType: "nf4", blocksize: 64, compressStatistics: doubleQuant });
    const root = quantModel(layer);
    const desc: ModelDescription = {
      className: "QuantRoot",
      children: { proj: { className: "Linear4bit", parameters: { weight: { shape: [N, K], dtype: "float32", quant: { type: "nf4", blocksize: 64, doubleQuant } } } } },
    };
    const real = computeModuleSizes(root).get("")!;
    expect(computeModuleSizes(desc).get("")).toBe(real);
    // packed 9,600 + absmax (300 × 4, or 300 × 1 + 2 × 4 + 1,024) + code map 64
    expect(real).toBe(doubleQuant ? 9600 + 300 + 8 + 1024 + 64 : 9600 + 1200 + 64);
    // transformers 5 counts 0.5 B per element and nothing else.
    expect(computeModuleSizes(desc, { quantizedSizes: "transformers" }).get("")).toBe((N * K) / 2);
    root.dispose();
    w.dispose();
  });

  it("int8: codes + SCB, like Linear8bitLt (weight_format is its own 1-byte buffer)", () => {
    const w = randn([N, K]);
    const root = quantModel(Linear8bitLt.fromFloat(w));
    const desc: ModelDescription = {
      className: "QuantRoot",
      children: {
        proj: {
          className: "Linear8bitLt",
          parameters: { weight: { shape: [N, K], dtype: "float16", quant: { type: "int8" } } },
          buffers: { weight_format: { shape: [], dtype: "uint8" } },
        },
      },
    };
    const real = computeModuleSizes(root).get("")!;
    expect(real).toBe(N * K + 4 * N + 1);
    expect(computeModuleSizes(desc).get("")).toBe(real);
    expect(computeModuleSizes(desc, { quantizedSizes: "transformers" }).get("")).toBe(N * K + 1);
    root.dispose();
    w.dispose();
  });

  it("special dtypes override quantization, and dtype never shrinks a quantized weight", () => {
    const desc: ModelDescription = {
      className: "Root",
      children: { a: { className: "Linear4bit", parameters: { weight: { shape: [64, 64], dtype: "bfloat16", quant: { type: "fp4" } } } } },
    };
    expect(computeModuleSizes(desc, { specialDtypes: { "a.weight": "bfloat16" } }).get("")).toBe(64 * 64 * 2);
    expect(computeModuleSizes(desc, { dtype: "int2" }).get("")).toBe(2048 + 64 * 4 + 64);
  });

  it("a 4-bit model gets a tighter plan than its bf16 original", () => {
    const bf16 = tinyLlama({ dtype: "bfloat16" });
    const nf4 = tinyLlama({ dtype: "bfloat16", quant: { type: "nf4" } });
    const big = computeModuleSizes(bf16).get("")!;
    const small = computeModuleSizes(nf4).get("")!;
    expect(small).toBeLessThan(big / 2);
    const maxMemory = { 0: small + 1000, cpu: 1e9 };
    expect([...inferAutoDeviceMap(nf4, { ...opts, dtype: undefined, maxMemory })]).toEqual([["", 0]]);
    expect(inferAutoDeviceMap(bf16, { ...opts, dtype: undefined, maxMemory }).size).toBeGreaterThan(1);
  });
});
