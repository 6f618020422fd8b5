// @lowbit/tensor: tensors on lowbit's native kernels (CPU and CUDA), reverse-mode autograd, nn modules
// (Linear, Linear4bit, Linear8bitLt, Embedding, RMSNorm, Dropout) and AdamW. Memory is explicit:
// dispose() tensors, or run code in tidy().

export {
  Tensor,
  arange,
  empty,
  full,
  fullLike,
  fromTypedArray,
  isTensor,
  ones,
  onesLike,
  rand,
  randn,
  tensor,
  zeros,
  zerosLike,
  type HostArray,
  type NestedArray,
  type RandomOptions,
  type TensorOptions,
} from "./tensor.js";
export { Generator, defaultGenerator, manualSeed, type GeneratorState } from "./random.js";
export { tidy, keep } from "./scope.js";
export { noGrad, enableGrad, isGradEnabled } from "./autograd.js";
export { checkpoint } from "./checkpoint.js";
export { availableDevices, normalizeDevice, type Device } from "./native.js";
export { FLOAT_DTYPES, isFloatDType, type FloatDType } from "./check.js";

export {
  abs,
  add,
  div,
  exp,
  gelu,
  log,
  maximum,
  minimum,
  mul,
  neg,
  pow,
  relu,
  rsqrt,
  scale,
  sigmoid,
  silu,
  sqrt,
  square,
  sub,
  tanh,
} from "./ops/elementwise.js";
export { argmax, max, mean, sum, sumTo } from "./ops/reduce.js";
export { linear, matmul } from "./ops/matmul.js";
export {
  cast,
  cat,
  contiguous,
  expand,
  flatten,
  narrow,
  permute,
  reshape,
  slice,
  squeeze,
  stack,
  toDevice,
  transpose,
  unsqueeze,
  view,
} from "./ops/views.js";
export { crossEntropy, dropout, embedding, logSoftmax, rmsNorm, rope, ropeInvFreq, softmax, type CrossEntropyOptions, type EmbeddingOptions } from "./ops/nn.js";
export { KVCache, scaledDotProductAttention, type AttentionOptions, type KVCacheOptions } from "./ops/attention.js";

export { Module, StateDictError, type LoadStateDictOptions, type LoadStateDictResult, type StateDict } from "./nn/module.js";
export { Dropout, Embedding, Linear, RMSNorm, type LayerOptions } from "./nn/layers.js";
export {
  Linear4bit,
  Linear8bitLt,
  type Linear4bitOptions,
  type Linear8bitLtOptions,
  type Quantize4bitLayerOptions,
} from "./nn/quantized.js";
export { AdamW, type AdamWOptions, type ParamGroup } from "./optim/adamw.js";

// The typed errors every op throws, re-exported so callers need not import the lower packages.
export { ArgumentError, DTypeError, LowbitError, ShapeError } from "@lowbit/dtypes";
export { DeviceError, DisposedError, OutOfMemoryError } from "@lowbit/kernels";
