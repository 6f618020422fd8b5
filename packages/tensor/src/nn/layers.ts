// The float layers: Linear, Embedding, RMSNorm and Dropout, each a thin Module over one op with
// torch's parameter names and default initialisation.

import { ArgumentError, expected, type DType } from "@lowbit/dtypes";
import { checkInt } from "../check.js";
import type { Device } from "../native.js";
import { Generator } from "../random.js";
import { Tensor, ones, rand, randn } from "../tensor.js";
import { linear } from "../ops/matmul.js";
import { dropout, embedding, rmsNorm, type EmbeddingOptions } from "../ops/nn.js";
import { Module } from "./module.js";

export interface LayerOptions {
  dtype?: DType;
  device?: Device;
  /** Source of the initial weights (default: the global generator). */
  generator?: Generator;
}

/** y = x W^T + b with weight (outFeatures, inFeatures); init U(-1/sqrt(in), 1/sqrt(in)) as torch. */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(inFeatures: number, outFeatures: number, options: LayerOptions & { bias?: boolean } = {}) {
    super();
    this.inFeatures = checkInt(inFeatures, "inFeatures", "Linear", 1);
    this.outFeatures = checkInt(outFeatures, "outFeatures", "Linear", 1);
    const bound = 1 / Math.sqrt(inFeatures);
    const init = { dtype: options.dtype, device: options.device, generator: options.generator, low: -bound, high: bound };
    this.registerParameter("weight", rand([outFeatures, inFeatures], init));
    this.registerParameter("bias", options.bias ?? true ? rand([outFeatures], init) : null);
  }

  /** (outFeatures, inFeatures) */
  get weight(): Tensor {
    return this.param("weight");
  }

  /** (outFeatures,) or null */
  get bias(): Tensor | null {
    return this.paramOrNull("bias");
  }

  /** x (..., in) → (..., out) */
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** Token embeddings: weight (numEmbeddings, embeddingDim), init N(0, 1) as torch. */
export class Embedding extends Module {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;

  constructor(numEmbeddings: number, embeddingDim: number, options: LayerOptions = {}) {
    super();
    this.numEmbeddings = checkInt(numEmbeddings, "numEmbeddings", "Embedding", 1);
    this.embeddingDim = checkInt(embeddingDim, "embeddingDim", "Embedding", 1);
    this.registerParameter("weight", randn([numEmbeddings, embeddingDim], { dtype: options.dtype, device: options.device, generator: options.generator }));
  }

  get weight(): Tensor {
    return this.param("weight");
  }

  /** ids (...) int32/int64 → (..., embeddingDim); `options.deferIdCheck` as in the embedding op. */
  forward(ids: Tensor, options: EmbeddingOptions = {}): Tensor {
    return embedding(this.weight, ids, options);
  }
}

/** HF LlamaRMSNorm over the last dim; weight (dim,) starts at ones. */
export class RMSNorm extends Module {
  readonly eps: number;

  constructor(dim: number, options: Omit<LayerOptions, "generator"> & { eps?: number } = {}) {
    super();
    checkInt(dim, "dim", "RMSNorm", 1);
    this.eps = options.eps ?? 1e-6;
    if (typeof this.eps !== "number" || !(this.eps >= 0)) throw new ArgumentError(expected("a number >= 0", "RMSNorm's eps", this.eps));
    this.registerParameter("weight", ones([dim], { dtype: options.dtype, device: options.device }));
  }

  get weight(): Tensor {
    return this.param("weight");
  }

  /** x (..., dim) → same shape */
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

/** Inverted dropout while training, identity in eval mode; reproducible through its generator. */
export class Dropout extends Module {
  readonly p: number;
  readonly generator: Generator | undefined;

  constructor(p = 0.5, options: { generator?: Generator } = {}) {
    super();
    if (typeof p !== "number" || !(p >= 0 && p <= 1)) throw new ArgumentError(expected("a probability in [0, 1]", "Dropout's p", p));
    this.p = p;
    this.generator = options.generator;
  }

  forward(x: Tensor): Tensor {
    return dropout(x, this.p, { training: this.training, generator: this.generator });
  }
}
