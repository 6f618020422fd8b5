// Test fixtures: the tiny Llama of spec A8 as a ModelDescription (transformers 5's LlamaForCausalLM
// module tree, fp32 parameters as a freshly built torch model has them), and a fixed device inventory
// so that no test depends on the machine.
import type { DeviceInventory, ModelDescription, ModuleDescription, QuantSpec } from "../src/index.js";

export interface TinyLlamaConfig {
  vocabSize?: number;
  hiddenSize?: number;
  intermediateSize?: number;
  numHiddenLayers?: number;
  numAttentionHeads?: number;
  numKeyValueHeads?: number;
  tieWordEmbeddings?: boolean;
  dtype?: string;
  /** Quantize every Linear of the decoder layers this way (bitsandbytes leaves lm_head alone). */
  quant?: QuantSpec;
}

/** LlamaForCausalLM(LlamaConfig(...)) as transformers 5 builds it, in registration order. */
export function tinyLlama(config: TinyLlamaConfig = {}): ModelDescription {
  const V = config.vocabSize ?? 128;
  const H = config.hiddenSize ?? 64;
  const I = config.intermediateSize ?? 128;
  const L = config.numHiddenLayers ?? 4;
  const heads = config.numAttentionHeads ?? 4;
  const kv = config.numKeyValueHeads ?? 2;
  const dtype = config.dtype ?? "float32";
  const hd = H / heads; // head_dim
  const quant = config.quant;
  const linear = (out: number, inp: number): ModuleDescription => ({
    className: "Linear",
    parameters: { weight: { shape: [out, inp], dtype, ...(quant === undefined ? {} : { quant }) } },
  });
  const norm = (): ModuleDescription => ({ className: "LlamaRMSNorm", parameters: { weight: { shape: [H], dtype } } });
  const layer = (): ModuleDescription => ({
    className: "LlamaDecoderLayer",
    children: {
      self_attn: {
        className: "LlamaAttention",
        children: { q_proj: linear(heads * hd, H), k_proj: linear(kv * hd, H), v_proj: linear(kv * hd, H), o_proj: linear(H, heads * hd) },
      },
      mlp: {
        className: "LlamaMLP",
        children: { gate_proj: linear(I, H), up_proj: linear(I, H), down_proj: linear(H, I), act_fn: { className: "SiLUActivation" } },
      },
      input_layernorm: norm(),
      post_attention_layernorm: norm(),
    },
  });
  return {
    className: "LlamaForCausalLM",
    children: [
      [
        "model",
        {
          className: "LlamaModel",
          children: [
            ["embed_tokens", { className: "Embedding", parameters: { weight: { shape: [V, H], dtype } } }],
            ["layers", { className: "ModuleList", children: Array.from({ length: L }, (_, i) => [String(i), layer()] as const) }],
            ["norm", norm()],
            [
              "rotary_emb",
              {
                className: "LlamaRotaryEmbedding",
                // Rotary frequencies stay fp32 and are not saved (persistent=False).
                buffers: {
                  inv_freq: { shape: [hd / 2], dtype: "float32", persistent: false },
                  original_inv_freq: { shape: [hd / 2], dtype: "float32", persistent: false },
                },
              },
            ],
          ],
        },
      ],
      ["lm_head", { className: "Linear", parameters: { weight: { shape: [V, H], dtype } } }],
    ],
    ...(config.tieWordEmbeddings ? { tiedParameters: [["lm_head.weight", "model.embed_tokens.weight"]] } : {}),
  };
}

/** A machine with `gpus` CUDA devices of `free` bytes each and 64 GiB of available RAM. */
export function inventory(gpus: number[], cpuAvailableBytes = 64 * 2 ** 30): DeviceInventory {
  return { gpus: gpus.map((free, index) => ({ index, freeBytes: free, totalBytes: free })), cpuAvailableBytes };
}

/** A logger that records messages instead of printing them. */
export function recorder(): { warn: (m: string) => void; info: (m: string) => void; warnings: string[]; infos: string[] } {
  const warnings: string[] = [];
  const infos: string[] = [];
  return { warn: (m) => warnings.push(m), info: (m) => infos.push(m), warnings, infos };
}
