// LlamaForCausalLM: the Llama decoder in @lowbit/tensor ops, following transformers/models/llama/modeling_llama.py
// (spec-hf-stack.md B7). It is also the decoder Mistral and Qwen2 reuse (src/models/{mistral,qwen2}/modeling.ts):
// their differences — projection biases and sliding-window layers — are config fields this file reads.
//
//   h = embed_tokens(ids)                                    (B, T, C)
//   per layer: h = h + o_proj(attn(rope(q), rope(k), v))      q (B, Hq, T, D), k / v (B, Hkv, P + T, D) with the cache
//              h = h + down_proj(act(gate_proj(n)) * up_proj(n)),  n = post_attention_layernorm(h)
//   logits = lm_head(norm(h))                                (B, T, V)
//
// RoPE is HF's rotate_half form with inv_freq / attention_scaling from ../../rope.ts (dynamic NTK recomputed as the
// sequence grows). Attention is causal with grouped-query heads (query head h reads kv head h / (Hq / Hkv)), a padding
// mask over all P + T keys, and, on sliding layers, a window: query position i sees keys j with i - W < j <= i. The
// fused kernel has no window, so a window that actually hides keys is applied by folding it into the key mask (one new
// position: the window is then the same for every query) or, for several new positions, by an eager attention with an
// explicit additive mask in float32 (transformers' eager path, with softmax in float32).
//
// Layers are looked up by name at every forward (`this.child("q_proj")`), so an adapter can replace one with
// `registerModule("q_proj", wrapped)`.

import {
  Module,
  Tensor,
  fromTypedArray,
  gelu,
  keep,
  matmul,
  relu,
  rope,
  scaledDotProductAttention,
  silu,
  softmax,
  tidy,
  type Device,
} from "@lowbit/tensor";
import type { DecoderConfigBase } from "../../config-base.js";
import { ConfigError } from "../../errors.js";
import {
  PreTrainedCausalLM,
  type ArchitectureSpec,
  type CacheLayout,
  type ForwardContext,
  type LinearLike,
  type LoadedModelInfo,
  type ModuleSpec,
  type PretrainedEmbedding,
  type PretrainedRMSNorm,
  type WeightSource,
} from "../../modeling-utils.js";
import { DynamicRope, computeRopeParameters } from "../../rope.js";
import type { PretrainedConfig } from "../../config.js";

/** The most negative float32: transformers' additive mask value (finfo.min), finite so fully masked rows stay finite. */
const MASK_MIN = -3.4028234663852886e38;

type Activation = (x: Tensor) => Tensor;

/** transformers' ACT2FN entries the decoder MLP can use. */
const ACTIVATIONS: Readonly<Record<string, Activation>> = {
  silu,
  swish: silu,
  gelu: (x) => gelu(x, "none"),
  gelu_pytorch_tanh: (x) => gelu(x, "tanh"),
  gelu_new: (x) => gelu(x, "tanh"),
  relu,
};

/** Per-layer sliding window (null for full attention), from `layer_types` and `sliding_window`. */
export function layerWindows(config: DecoderConfigBase): (number | null)[] {
  return config.layerTypes.map((t) => (t === "sliding_attention" ? config.slidingWindow : null));
}

/**
 * The Llama-family weight table: HF's names and shapes, in HF's parameter order (embed_tokens; per layer q/k/v/o_proj,
 * gate/up/down_proj, input / post_attention_layernorm; norm; lm_head). Biases follow `config.projectionBias`;
 * lm_head is tied to embed_tokens when `tie_word_embeddings`.
 * @throws ConfigError for what this decoder cannot run (an unknown hidden_act, partial rotary dims)
 */
export function llamaArchitecture(config: DecoderConfigBase, architecture = "LlamaForCausalLM"): ArchitectureSpec {
  if (!Object.prototype.hasOwnProperty.call(ACTIVATIONS, config.hiddenAct)) {
    throw new ConfigError(config.file, `hidden_act ${JSON.stringify(config.hiddenAct)} is not supported (supported: ${Object.keys(ACTIVATIONS).join(", ")})`, { key: "hidden_act" });
  }
  const rotaryDim = computeRopeParameters(config).rotaryDim;
  if (rotaryDim !== config.headDim) {
    throw new ConfigError(config.file, `rotary dims ${rotaryDim} differ from head_dim ${config.headDim} (partial_rotary_factor); ${architecture} rotates whole heads`, {
      key: "rope_parameters.partial_rotary_factor",
    });
  }
  const C = config.hiddenSize;
  const D = config.headDim;
  const I = config.intermediateSize;
  const bias = config.projectionBias;
  const modules: ModuleSpec[] = [{ kind: "embedding", name: "model.embed_tokens", unit: "model.embed_tokens", numEmbeddings: config.vocabSize, embeddingDim: C }];
  const units = ["model.embed_tokens"];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const unit = `model.layers.${i}`;
    units.push(unit);
    const lin = (name: string, inFeatures: number, outFeatures: number, b: boolean): ModuleSpec => ({ kind: "linear", name: `${unit}.${name}`, unit, inFeatures, outFeatures, bias: b, tiedTo: null });
    modules.push(
      lin("self_attn.q_proj", C, config.numAttentionHeads * D, bias.q),
      lin("self_attn.k_proj", C, config.numKeyValueHeads * D, bias.k),
      lin("self_attn.v_proj", C, config.numKeyValueHeads * D, bias.v),
      lin("self_attn.o_proj", config.numAttentionHeads * D, C, bias.o),
      lin("mlp.gate_proj", C, I, bias.mlp),
      lin("mlp.up_proj", C, I, bias.mlp),
      lin("mlp.down_proj", I, C, bias.mlp),
      { kind: "norm", name: `${unit}.input_layernorm`, unit, dim: C },
      { kind: "norm", name: `${unit}.post_attention_layernorm`, unit, dim: C },
    );
  }
  modules.push({ kind: "norm", name: "model.norm", unit: "model.norm", dim: C });
  units.push("model.norm");
  modules.push({
    kind: "linear",
    name: "lm_head",
    unit: "lm_head",
    inFeatures: C,
    outFeatures: config.vocabSize,
    bias: false,
    tiedTo: config.tieWordEmbeddings ? "model.embed_tokens" : null,
  });
  units.push("lm_head");
  // Very old checkpoints stored the rotary buffers; transformers ignores them on load.
  return { architecture, modules, units, ignoredKeys: [/(^|\.)rotary_emb\.inv_freq$/] };
}

/**
 * LlamaRotaryEmbedding: `inv_freq` and `original_inv_freq` (non-persistent float32 buffers (D/2,), as transformers
 * registers them, so they count in the memory footprint) plus device copies of the frequencies in use.
 */
export class LlamaRotaryEmbedding extends Module {
  readonly attentionScaling: number;
  readonly #initial: Float32Array;
  readonly #dynamic: DynamicRope | null;
  /** device → the frequencies uploaded there and the host array they came from. */
  readonly #onDevice = new Map<Device, { from: Float32Array; t: Tensor }>();

  constructor(config: DecoderConfigBase, device: Device) {
    super();
    const params = computeRopeParameters(config);
    this.attentionScaling = params.attentionScaling;
    this.#dynamic = config.ropeParameters.ropeType === "dynamic" ? new DynamicRope(config) : null;
    this.#initial = params.invFreq;
    const D2 = params.invFreq.length;
    this.registerBuffer("inv_freq", fromTypedArray(params.invFreq, [D2], { dtype: "float32", device }), { persistent: false });
    this.registerBuffer("original_inv_freq", fromTypedArray(params.invFreq, [D2], { dtype: "float32", device }), { persistent: false });
  }

  /**
   * The inverse frequencies (D/2,) float32 on `device` for a forward over `seqLen()` positions (max position id + 1):
   * dynamic NTK recomputes them past max_position_embeddings (transformers' dynamic_rope_update).
   */
  invFreq(seqLen: () => number, device: Device): Tensor {
    // Only dynamic NTK asks for the length (with positions on a device, asking reads them back).
    const host = this.#dynamic === null ? this.#initial : this.#dynamic.update(seqLen());
    const have = this.#onDevice.get(device);
    if (have !== undefined && have.from === host) return have.t;
    have?.t.dispose();
    const t = keep(fromTypedArray(host, [host.length], { dtype: "float32", device }));
    this.#onDevice.set(device, { from: host, t });
    return t;
  }

  override dispose(): void {
    super.dispose();
    for (const { t } of this.#onDevice.values()) t.dispose();
    this.#onDevice.clear();
  }
}

/** What a decoder layer needs from the current forward call. */
export interface LayerInput {
  readonly ctx: ForwardContext;
  readonly rotary: LlamaRotaryEmbedding;
  readonly device: Device;
}

/** k / v (B, Hkv, Tk, D) → (B, Hq, Tk, D), each kv head repeated for its G = Hq / Hkv query heads (repeat_kv). */
function repeatKv(x: Tensor, groups: number): Tensor {
  if (groups === 1) return x;
  const [B, Hkv, Tk, D] = x.shape as [number, number, number, number];
  return x.unsqueeze(2).expand(B, Hkv, groups, Tk, D).reshape(B, Hkv * groups, Tk, D);
}

/** LlamaAttention: q/k/v/o projections, RoPE on q and k, the KV cache, causal GQA attention (with an optional window). */
export class LlamaAttention extends Module {
  readonly layerIdx: number;
  readonly numHeads: number;
  readonly numKeyValueHeads: number;
  readonly headDim: number;
  /** head_dim ** -0.5 */
  readonly scaling: number;
  /** Keys visible to a query: itself and the previous window - 1; null for full attention. */
  readonly slidingWindow: number | null;

  constructor(config: DecoderConfigBase, layerIdx: number, src: WeightSource, slidingWindow: number | null) {
    super();
    this.layerIdx = layerIdx;
    this.numHeads = config.numAttentionHeads;
    this.numKeyValueHeads = config.numKeyValueHeads;
    this.headDim = config.headDim;
    this.scaling = 1 / Math.sqrt(config.headDim);
    this.slidingWindow = slidingWindow;
    const p = `model.layers.${layerIdx}.self_attn.`;
    for (const name of ["q_proj", "k_proj", "v_proj", "o_proj"]) this.registerModule(name, src.linear(p + name));
  }

  #proj(name: string): LinearLike {
    return this.child<LinearLike>(name);
  }

  /** x (B, T, C) → (B, T, C) */
  forward(x: Tensor, input: LayerInput): Tensor {
    const [B, T] = x.shape as [number, number];
    const { ctx, rotary, device } = input;
    const Hq = this.numHeads;
    const Hkv = this.numKeyValueHeads;
    const D = this.headDim;
    const positions = ctx.positions(device); // (B, T) int32 / int64
    const invFreq = rotary.invFreq(() => ctx.seqLen, device); // (D/2,) float32
    const scaling = { attentionScaling: rotary.attentionScaling };
    const q = rope(this.#proj("q_proj").forward(x).reshape(B, T, Hq, D).transpose(1, 2), positions, invFreq, scaling); // (B, Hq, T, D)
    const k = rope(this.#proj("k_proj").forward(x).reshape(B, T, Hkv, D).transpose(1, 2), positions, invFreq, scaling); // (B, Hkv, T, D)
    const v = this.#proj("v_proj").forward(x).reshape(B, T, Hkv, D).transpose(1, 2); // (B, Hkv, T, D)
    const cache = ctx.input.cache;
    const kv = cache === null ? { k, v } : cache.append(this.layerIdx, k, v); // (B, Hkv, P + T, D)
    const Tk = ctx.input.past + T;
    const W = this.slidingWindow;
    let a: Tensor; // (B, Hq, T, D)
    if (W === null || Tk <= W) {
      // No key is old enough to leave the window: plain causal attention.
      a = scaledDotProductAttention(q, kv.k, kv.v, { causal: true, mask: ctx.keyMask(device), scale: this.scaling });
    } else if (T === 1) {
      // One query (at Tk - 1) sees the last W keys: attend over that slice of the cache (views, nothing copied).
      const mask = ctx.keyMask(device);
      a = scaledDotProductAttention(q, kv.k.narrow(2, Tk - W, W), kv.v.narrow(2, Tk - W, W), {
        causal: true,
        mask: mask === null ? null : mask.narrow(1, Tk - W, W),
        scale: this.scaling,
        qStart: W - 1,
      });
    } else {
      a = this.#windowedAttention(q, kv.k, kv.v, ctx, W);
    }
    const merged = a.transpose(1, 2).reshape(B, T, Hq * D); // (B, T, Hq·D)
    return this.#proj("o_proj").forward(merged); // (B, T, C)
  }

  /**
   * Eager attention with an explicit additive mask (causal, sliding window, padding), in float32 with softmax in
   * float32 as transformers' eager path: q (B, Hq, T, D), k / v (B, Hkv, Tk, D) → (B, Hq, T, D) in q's dtype.
   */
  #windowedAttention(q: Tensor, k: Tensor, v: Tensor, ctx: ForwardContext, window: number): Tensor {
    const [B, Hq, T] = q.shape as [number, number, number, number]; // D is carried by the matmuls
    const Tk = k.shape[2]!;
    const P = Tk - T;
    const G = Hq / this.numKeyValueHeads;
    const f32 = (t: Tensor): Tensor => (t.dtype === "float32" ? t : t.to("float32"));
    const kr = f32(repeatKv(k, G)); // (B, Hq, Tk, D)
    const vr = f32(repeatKv(v, G)); // (B, Hq, Tk, D)
    const scores = matmul(f32(q), kr.transpose(-2, -1)).mul(this.scaling); // (B, Hq, T, Tk)
    // Additive mask (B, 1, T, Tk): query i (absolute P + i) sees key j when P + i - window < j <= P + i and j is not padding.
    const mask = ctx.hostMask();
    const bias = new Float32Array(B * T * Tk);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < T; i++) {
        const qi = P + i;
        const row = (b * T + i) * Tk;
        for (let j = 0; j < Tk; j++) {
          const visible = j <= qi && j > qi - window && (mask === null || mask[b * Tk + j] === 1);
          bias[row + j] = visible ? 0 : MASK_MIN;
        }
      }
    }
    const biasT = fromTypedArray(bias, [B, 1, T, Tk], { dtype: "float32", device: q.device });
    const probs = softmax(scores.add(biasT), -1); // (B, Hq, T, Tk)
    const out = matmul(probs, vr); // (B, Hq, T, D)
    return out.dtype === q.dtype ? out : out.to(q.dtype);
  }
}

/** LlamaMLP: down_proj(act(gate_proj(x)) * up_proj(x)). */
export class LlamaMLP extends Module {
  readonly act: Activation;

  constructor(config: DecoderConfigBase, layerIdx: number, src: WeightSource) {
    super();
    this.act = ACTIVATIONS[config.hiddenAct]!;
    const p = `model.layers.${layerIdx}.mlp.`;
    for (const name of ["gate_proj", "up_proj", "down_proj"]) this.registerModule(name, src.linear(p + name));
  }

  /** x (B, T, C) → (B, T, C) */
  forward(x: Tensor): Tensor {
    const gate = this.child<LinearLike>("gate_proj").forward(x); // (B, T, I)
    const up = this.child<LinearLike>("up_proj").forward(x); // (B, T, I)
    return this.child<LinearLike>("down_proj").forward(this.act(gate).mul(up)); // (B, T, C)
  }
}

/** LlamaDecoderLayer: pre-norm attention and MLP blocks with residuals. */
export class LlamaDecoderLayer extends Module {
  readonly layerIdx: number;

  constructor(config: DecoderConfigBase, layerIdx: number, src: WeightSource, slidingWindow: number | null) {
    super();
    this.layerIdx = layerIdx;
    // transformers' attribute order (self_attn, mlp, input_layernorm, post_attention_layernorm) = parameter order.
    this.registerModule("self_attn", new LlamaAttention(config, layerIdx, src, slidingWindow));
    this.registerModule("mlp", new LlamaMLP(config, layerIdx, src));
    this.registerModule("input_layernorm", src.norm(`model.layers.${layerIdx}.input_layernorm`));
    this.registerModule("post_attention_layernorm", src.norm(`model.layers.${layerIdx}.post_attention_layernorm`));
  }

  get selfAttn(): LlamaAttention {
    return this.child<LlamaAttention>("self_attn");
  }

  /** h (B, T, C) → (B, T, C) */
  forward(h: Tensor, input: LayerInput): Tensor {
    const attnOut = this.selfAttn.forward(this.child<PretrainedRMSNorm>("input_layernorm").forward(h), input); // (B, T, C)
    const h1 = h.add(attnOut);
    const mlpOut = this.child<LlamaMLP>("mlp").forward(this.child<PretrainedRMSNorm>("post_attention_layernorm").forward(h1)); // (B, T, C)
    return h1.add(mlpOut);
  }
}

/** LlamaModel: embed_tokens, the decoder layers, the final norm and the rotary embedding. */
export class LlamaModel extends Module {
  readonly layers: readonly LlamaDecoderLayer[];

  constructor(config: DecoderConfigBase, src: WeightSource, embedDevice: Device) {
    super();
    this.registerModule("embed_tokens", src.embedding("model.embed_tokens"));
    const list = this.registerModule("layers", new Module());
    const windows = layerWindows(config);
    const layers: LlamaDecoderLayer[] = [];
    for (let i = 0; i < config.numHiddenLayers; i++) layers.push(list.registerModule(String(i), new LlamaDecoderLayer(config, i, src, windows[i] ?? null)));
    this.layers = layers;
    this.registerModule("norm", src.norm("model.norm"));
    this.registerModule("rotary_emb", new LlamaRotaryEmbedding(config, embedDevice));
  }

  get embedTokens(): PretrainedEmbedding {
    return this.child<PretrainedEmbedding>("embed_tokens");
  }

  get norm(): PretrainedRMSNorm {
    return this.child<PretrainedRMSNorm>("norm");
  }

  get rotaryEmb(): LlamaRotaryEmbedding {
    return this.child<LlamaRotaryEmbedding>("rotary_emb");
  }
}

/** Moves h to `device` (a copy only when it is elsewhere) and disposes the old handle when it moved. */
function moveTo(h: Tensor, device: Device): Tensor {
  if (h.device === device) return h;
  const moved = h.to(device);
  h.dispose();
  return moved;
}

/**
 * LlamaForCausalLM: `model` (LlamaModel) and `lm_head`. Built by the loader (AutoModelForCausalLM.fromPretrained);
 * `forward({ inputIds, attentionMask?, positionIds?, cache? })` returns `{ logits }`.
 */
export class LlamaForCausalLM extends PreTrainedCausalLM {
  constructor(config: PretrainedConfig, spec: ArchitectureSpec, info: LoadedModelInfo, src: WeightSource) {
    super(config, spec, info);
    try {
      this.registerModule("model", new LlamaModel(config, src, this.deviceOf("model.embed_tokens")));
      this.registerModule("lm_head", src.linear("lm_head"));
    } catch (err) {
      // Free what was registered so far (the loader frees the modules it handed out).
      this.dispose();
      throw err;
    }
  }

  get model(): LlamaModel {
    return this.child<LlamaModel>("model");
  }

  get numLayers(): number {
    return this.config.numHiddenLayers;
  }

  cacheLayout(): CacheLayout {
    return {
      kvHeads: this.config.numKeyValueHeads,
      headDim: this.config.headDim,
      dtype: this.dtype,
      layerDevices: Array.from({ length: this.numLayers }, (_, i) => this.deviceOf(`model.layers.${i}`)),
    };
  }

  protected decode(ctx: ForwardContext): Tensor {
    const { length: T, logitsToKeep } = ctx.input;
    const model = this.model;
    const embedDevice = this.deviceOf("model.embed_tokens");
    // Ids on the device are range-checked there; a bad one is reported by the next device→host copy (no wait here).
    let h = model.embedTokens.forward(ctx.ids(embedDevice), { deferIdCheck: true }); // (B, T, C)
    const rotary = model.rotaryEmb;
    for (const layer of model.layers) {
      const device = this.deviceOf(`model.layers.${layer.layerIdx}`);
      h = moveTo(h, device);
      const input: LayerInput = { ctx, rotary, device };
      const prev = h;
      // One scope per layer, so a layer's intermediates are freed before the next layer runs.
      h = tidy(() => layer.forward(prev, input)); // (B, T, C)
      prev.dispose();
    }
    h = moveTo(h, this.deviceOf("model.norm"));
    if (logitsToKeep < T) h = h.narrow(1, T - logitsToKeep, logitsToKeep); // (B, keep, C): norm and lm_head are per position
    h = model.norm.forward(h); // (B, keep, C)
    h = moveTo(h, this.deviceOf("lm_head"));
    return this.child<LinearLike>("lm_head").forward(h); // (B, keep, V)
  }
}
