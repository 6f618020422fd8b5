// A 2-layer Llama-shaped model built only from @lowbit/tensor ops (RMSNorm, q/k/v/o Linear, rope, GQA
// causal attention, SwiGLU MLP, residuals, lm head, cross-entropy) trains: the loss falls over 50
// AdamW steps on a fixed random batch, memory stays flat, and checkpointed layers train identically.

import { describe, expect, it } from "vitest";
import { memoryStats } from "@lowbit/kernels";
import * as lb from "../src/index.js";
import { AdamW, Embedding, Generator, Linear, Module, RMSNorm, checkpoint, keep, tidy, type Tensor } from "../src/index.js";
import { forEachDevice } from "./devices.js";

interface Config {
  vocab: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  layers: number;
}

const CFG: Config = { vocab: 32, hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, layers: 2 };

class Attention extends Module {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear;
  readonly headDim: number;
  constructor(cfg: Config, device: string, generator: Generator) {
    super();
    this.headDim = cfg.hidden / cfg.heads;
    const opts = { bias: false, device, generator };
    this.q = this.registerModule("q_proj", new Linear(cfg.hidden, cfg.heads * this.headDim, opts));
    this.k = this.registerModule("k_proj", new Linear(cfg.hidden, cfg.kvHeads * this.headDim, opts));
    this.v = this.registerModule("v_proj", new Linear(cfg.hidden, cfg.kvHeads * this.headDim, opts));
    this.o = this.registerModule("o_proj", new Linear(cfg.heads * this.headDim, cfg.hidden, opts));
  }
  /** x (B, T, C) → (B, T, C) */
  forward(x: Tensor, positions: Tensor, invFreq: Tensor): Tensor {
    const [B, T] = x.shape as [number, number];
    const D = this.headDim;
    const split = (t: Tensor): Tensor => t.reshape(B, T, -1, D).transpose(1, 2); // (B, H, T, D)
    const q = lb.rope(split(this.q.forward(x)), positions, invFreq);
    const k = lb.rope(split(this.k.forward(x)), positions, invFreq);
    const v = split(this.v.forward(x));
    const a = lb.scaledDotProductAttention(q, k, v, { causal: true }); // (B, Hq, T, D)
    return this.o.forward(a.transpose(1, 2).reshape(B, T, -1));
  }
}

class MLP extends Module {
  readonly gate: Linear;
  readonly up: Linear;
  readonly down: Linear;
  constructor(cfg: Config, device: string, generator: Generator) {
    super();
    const opts = { bias: false, device, generator };
    this.gate = this.registerModule("gate_proj", new Linear(cfg.hidden, cfg.intermediate, opts));
    this.up = this.registerModule("up_proj", new Linear(cfg.hidden, cfg.intermediate, opts));
    this.down = this.registerModule("down_proj", new Linear(cfg.intermediate, cfg.hidden, opts));
  }
  /** SwiGLU: down(silu(gate(x)) * up(x)) */
  forward(x: Tensor): Tensor {
    return this.down.forward(lb.silu(this.gate.forward(x)).mul(this.up.forward(x)));
  }
}

class DecoderLayer extends Module {
  readonly inputNorm: RMSNorm;
  readonly attn: Attention;
  readonly postNorm: RMSNorm;
  readonly mlp: MLP;
  constructor(cfg: Config, device: string, generator: Generator) {
    super();
    this.inputNorm = this.registerModule("input_layernorm", new RMSNorm(cfg.hidden, { device }));
    this.attn = this.registerModule("self_attn", new Attention(cfg, device, generator));
    this.postNorm = this.registerModule("post_attention_layernorm", new RMSNorm(cfg.hidden, { device }));
    this.mlp = this.registerModule("mlp", new MLP(cfg, device, generator));
  }
  forward(x: Tensor, positions: Tensor, invFreq: Tensor): Tensor {
    const h = x.add(this.attn.forward(this.inputNorm.forward(x), positions, invFreq));
    return h.add(this.mlp.forward(this.postNorm.forward(h)));
  }
}

class TinyLlama extends Module {
  readonly embed: Embedding;
  readonly layers: DecoderLayer[];
  readonly norm: RMSNorm;
  readonly lmHead: Linear;
  useCheckpoint = false;
  constructor(cfg: Config, device: string, seed: number) {
    super();
    const generator = new Generator(seed);
    this.embed = this.registerModule("embed_tokens", new Embedding(cfg.vocab, cfg.hidden, { device, generator }));
    const list = this.registerModule("layers", new Module());
    this.layers = Array.from({ length: cfg.layers }, (_, i) => list.registerModule(String(i), new DecoderLayer(cfg, device, generator)));
    this.norm = this.registerModule("norm", new RMSNorm(cfg.hidden, { device }));
    this.lmHead = this.registerModule("lm_head", new Linear(cfg.hidden, cfg.vocab, { bias: false, device, generator }));
    this.registerBuffer("inv_freq", lb.ropeInvFreq(cfg.hidden / cfg.heads, 10000, { device }), { persistent: false });
  }
  /** ids (B, T) → logits (B, T, vocab) */
  forward(ids: Tensor): Tensor {
    const T = ids.shape[1]!;
    const positions = lb.arange(T, undefined, 1, { device: ids.device });
    const invFreq = this.buffer("inv_freq");
    let h = this.embed.forward(ids);
    for (const layer of this.layers) {
      h = this.useCheckpoint ? checkpoint((x) => layer.forward(x, positions, invFreq), h) : layer.forward(h, positions, invFreq);
    }
    return this.lmHead.forward(this.norm.forward(h));
  }
}

function batch(device: string): { ids: Tensor; targets: Tensor } {
  const gen = new Generator(2024);
  const B = 2;
  const T = 12;
  const tokens = Array.from({ length: B * (T + 1) }, () => gen.nextUint32() % CFG.vocab);
  const ids = tokens.filter((_, i) => i % (T + 1) !== T);
  const targets = tokens.filter((_, i) => i % (T + 1) !== 0);
  targets[3] = -100; // one ignored position
  return {
    ids: keep(lb.fromTypedArray(Int32Array.from(ids), [B, T], { device })),
    targets: keep(lb.fromTypedArray(Int32Array.from(targets), [B, T], { device })),
  };
}

function train(device: string, steps: number, useCheckpoint: boolean): { losses: number[]; allocated: number[] } {
  const model = new TinyLlama(CFG, device, 7);
  model.useCheckpoint = useCheckpoint;
  const opt = new AdamW(model.trainableParameters(), { lr: 1e-2, weightDecay: 0.01 });
  const { ids, targets } = batch(device);
  const losses: number[] = [];
  const allocated: number[] = [];
  try {
    for (let s = 0; s < steps; s++) {
      tidy(() => {
        const loss = lb.crossEntropy(model.forward(ids), targets);
        losses.push(loss.item());
        loss.backward();
      });
      opt.step();
      opt.zeroGrad();
      allocated.push(memoryStats(device).allocatedBytes);
    }
  } finally {
    model.dispose();
    opt.dispose();
    ids.dispose();
    targets.dispose();
  }
  return { losses, allocated };
}

forEachDevice((device) => {
  describe("tiny Llama", () => {
    it("the loss falls over 50 AdamW steps and memory stays flat", () => {
      const before = memoryStats(device).allocatedBytes;
      const { losses, allocated } = train(device, 50, false);
      expect(losses[0]!).toBeGreaterThan(Math.log(CFG.vocab) - 1); // near uniform at init
      expect(losses[49]!).toBeLessThan(0.25 * losses[0]!);
      // Mostly monotone: the last 10 losses are all below the first 10.
      expect(Math.max(...losses.slice(40))).toBeLessThan(Math.min(...losses.slice(0, 10)));
      expect(allocated[49]).toBe(allocated[1]);
      expect(memoryStats(device).allocatedBytes).toBe(before);
    });

    it("checkpointed layers give the same losses", () => {
      const plain = train(device, 4, false).losses;
      const ckpt = train(device, 4, true).losses;
      ckpt.forEach((l, i) => expect(Math.abs(l - plain[i]!)).toBeLessThan(1e-5 * Math.max(1, plain[i]!)));
    });
  });
});
