// @lowbit/dtypes: the dtype table and bit-exact bitsandbytes codecs in pure TypeScript.

export * from "./errors.js";
export * from "./table.js";
export * from "./float.js";
export {
  DYNAMIC_MAP_SIGNED,
  DYNAMIC_MAP_UNSIGNED,
  FP4_CODE,
  FP4_QUANT_MAP,
  FP4_THRESHOLDS,
  NF4_CODE,
  NF4_THRESHOLDS,
  f32FromBits,
} from "./codebooks.js";
export {
  NESTED_BLOCKSIZE,
  QUANT4_BLOCKSIZES,
  QUANT_TYPES,
  dequantTable,
  dequantize4bit,
  fp4Code,
  nf4Code,
  quantMap,
  quantize4bit,
  stateAbsmax,
  type Quantize4bitOptions,
  type Quantized4bit,
} from "./quant4.js";
export {
  BLOCKWISE8_BLOCKSIZES,
  dequantizeBlockwise,
  nearestCode8,
  quantizeBlockwise,
  type Blockwise8Options,
  type Blockwise8Result,
} from "./blockwise8.js";
export { INT8_DEQUANT_SCALE, int8VectorwiseDequant, int8VectorwiseQuant, type Int8Vectorwise, type Int8VectorwiseOptions } from "./int8.js";
export { QuantState, checkQuantType, isQuantType, type NestedState, type QuantStateInit, type QuantType, type StateTensor } from "./quant-state.js";
export { pyFloatRepr } from "./pyfloat.js";
export { PyFloat, pyJsonDumps, pyJsonString, type PyJsonValue } from "./pyjson.js";
export { cudaReciprocal } from "./reciprocal.js";
export type { FloatArray, FloatDType } from "./validate.js";
