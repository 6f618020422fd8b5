// Quantized linear layers with frozen weights: Linear4bit (bitsandbytes NF4/FP4, optional nested
// absmax, spec-bitsandbytes.md §13, §15) and Linear8bitLt (LLM.int8 with outlier decomposition, §12).
// Both are differentiable in their input only (QLoRA-style training keeps adapters beside them); the
// weights never receive gradients. State-dict keys follow bitsandbytes so checkpoints interoperate.

import {
  ArgumentError,
  INT8_DEQUANT_SCALE,
  NESTED_BLOCKSIZE,
  QUANT4_BLOCKSIZES,
  QuantState,
  ShapeError,
  DYNAMIC_MAP_SIGNED,
  expected,
  quantMap,
  type QuantType as QuantTypeName,
  type StateTensor,
} from "@lowbit/dtypes";
import { QuantType, type QuantTypeId } from "@lowbit/kernels";
import { needsGrad, noGrad, record } from "../autograd.js";
import { checkFloat, checkInt, checkSameDevice, checkTensor, type FloatDType } from "../check.js";
import { dtypeId, native, normalizeDevice, type Device } from "../native.js";
import { formatShape } from "../shape.js";
import { Tensor, empty, fromTypedArray, full } from "../tensor.js";
import { add, binaryRaw, unaryRaw } from "../ops/elementwise.js";
import { matmulRaw } from "../ops/matmul.js";
import { cast, dense, reshape, toDevice } from "../ops/views.js";
import { Module, type StateDict } from "./module.js";

function checkComputeDType(d: unknown, op: string): FloatDType | null {
  if (d === null || d === undefined) return null;
  if (d !== "float32" && d !== "float16" && d !== "bfloat16") throw new ArgumentError(expected("float32, float16 or bfloat16", `${op}'s computeDtype`, d));
  return d;
}

export interface Linear4bitOptions {
  /** Dtype the product is computed in; default: the input's dtype (bitsandbytes compute_dtype). */
  computeDtype?: FloatDType | null;
  /** (outFeatures,) float bias, trainable unless frozen by the caller. */
  bias?: Tensor | null;
  /** Inputs with at most this many rows use the fused gemm4bit kernel; more dequantize + matmul (default 16). */
  fusedMaxRows?: number;
}

export interface Quantize4bitLayerOptions extends Linear4bitOptions {
  quantType?: QuantTypeName;
  blocksize?: number;
  /** Double quantization of the absmax (bitsandbytes compress_statistics). */
  compressStatistics?: boolean;
}

/** The device tensors of a 4-bit weight (what the kernels read), all read-only. */
interface Quant4Tensors {
  /** (ceil(N*K/2),) uint8 packed codes */
  packed: Tensor;
  /** float32 (nBlocks,), or uint8 codes when nested */
  absmax: Tensor;
  /** float32 (ceil(nBlocks/256),) when nested */
  nestedAbsmax: Tensor | null;
  /** float32 (256,) when nested */
  nestedCode: Tensor | null;
}

/** Dequantizes a 4-bit weight to (N, K) in `dtype`, outside autograd. */
function dequant4(q: Quant4Tensors, state: QuantState, dtype: FloatDType): Tensor {
  const [N, K] = state.shape as [number, number];
  const n = N * K;
  const nBlocks = Math.ceil(n / state.blocksize);
  let absmax = q.absmax;
  if (q.nestedAbsmax !== null && q.nestedCode !== null) {
    absmax = empty([nBlocks], "float32", q.packed.device);
    native().dequantizeNestedAbsmax(
      absmax.storage, 0, q.absmax.storage, q.absmax.byteOffset, q.nestedAbsmax.storage, q.nestedAbsmax.byteOffset,
      q.nestedCode.storage, q.nestedCode.byteOffset, state.offset ?? 0, nBlocks, state.state2!.blocksize,
    );
  }
  const w = empty([N, K], dtype, q.packed.device);
  if (n > 0) {
    native().dequantize4bit(w.storage, 0, dtypeId(dtype), q.packed.storage, q.packed.byteOffset, absmax.storage, absmax.byteOffset, n, state.blocksize, QuantType[state.quantType] as QuantTypeId);
  }
  if (absmax !== q.absmax) absmax.dispose();
  return w;
}

/**
 * The nested half of double quantization on absmax's device: (absmax - offset) 8-bit blockwise quantized with the
 * signed dynamic map in blocks of NESTED_BLOCKSIZE. absmax (nBlocks,) float32 → codes (nBlocks,) uint8 and the
 * nested absmax (ceil(nBlocks / 256),) float32, both read back for the QuantState.
 */
function quantizeNestedAbsmax(absmax: Tensor, offset: number): { codes: Uint8Array; absmax: Float32Array } {
  const n = absmax.numel;
  const device = absmax.device;
  const centred = unaryRaw("addScalar", absmax, -offset); // float32 a - offset, one rounding (as Math.fround(a - offset))
  const codes = empty([n], "uint8", device);
  const absmax2 = empty([Math.ceil(n / NESTED_BLOCKSIZE)], "float32", device);
  const code = fromTypedArray(DYNAMIC_MAP_SIGNED, [DYNAMIC_MAP_SIGNED.length], { dtype: "float32", device });
  try {
    if (n > 0) {
      native().quantizeBlockwise8(codes.storage, 0, absmax2.storage, 0, centred.storage, centred.byteOffset, dtypeId("float32"), n, NESTED_BLOCKSIZE, code.storage, 0);
    }
    return { codes: codes.toTypedArray() as Uint8Array, absmax: absmax2.toTypedArray() as Float32Array };
  } finally {
    for (const t of [centred, codes, absmax2, code]) t.dispose();
  }
}

/**
 * bitsandbytes Linear4bit: y = x dequant(W)^T + b with W (outFeatures, inFeatures) stored as packed
 * 4-bit codes and a QuantState. Forward uses the fused gemm4bit kernel for few rows (decoding) and
 * dequantize + matmul otherwise; backward gives grad_x = grad_y @ dequant(W) only.
 */
export class Linear4bit extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** Host metadata of the quantization (blocksize, type, nested offset, original dtype and shape). */
  readonly quantState: QuantState;
  computeDtype: FloatDType | null;
  readonly fusedMaxRows: number;
  #stateJson: Tensor;

  private constructor(packed: Tensor, state: QuantState, device: Device, options: Linear4bitOptions) {
    super();
    if (state.shape.length !== 2) throw new ShapeError(`Linear4bit: expected a 2-D quant state shape [out, in] but received ${formatShape(state.shape)}`);
    const [N, K] = state.shape as [number, number];
    this.outFeatures = N;
    this.inFeatures = K;
    this.quantState = state;
    this.computeDtype = checkComputeDType(options.computeDtype, "Linear4bit");
    this.fusedMaxRows = checkInt(options.fusedMaxRows ?? 16, "fusedMaxRows", "Linear4bit", 0);
    const bytes = Math.ceil((N * K) / 2);
    if (packed.dtype !== "uint8" || packed.numel !== bytes) {
      throw new ShapeError(`Linear4bit: expected ${bytes} uint8 packed bytes for shape [${N}, ${K}] but received ${packed.numel} ${packed.dtype}`);
    }
    // bitsandbytes stores the packed weight as (ceil(n/2), 1).
    const onDevice = packed.device === device ? packed : toDevice(packed, device);
    this.registerParameter("weight", reshape(onDevice, [bytes, 1]), { requiresGrad: false });
    if (onDevice !== packed) onDevice.dispose();
    const up = (data: Float32Array | Uint8Array, shape: number[]): Tensor => fromTypedArray(data, shape, { device });
    this.registerBuffer("weight.absmax", up(state.absmax, [state.absmax.length]));
    this.registerBuffer("weight.quant_map", up(state.code, [state.code.length]));
    if (state.state2 !== null) {
      this.registerBuffer("weight.nested_absmax", up(state.state2.absmax, [state.state2.absmax.length]));
      this.registerBuffer("weight.nested_quant_map", up(state.state2.code.slice(), [state.state2.code.length]));
    }
    const json = new TextEncoder().encode(state.toJSONString());
    this.#stateJson = fromTypedArray(json, [json.length], { device });
    this.#stateJson.kept = true;
    const bias = options.bias ?? null;
    if (bias !== null) {
      checkFloat(bias, "bias", "Linear4bit");
      if (bias.ndim !== 1 || bias.shape[0] !== N) throw new ShapeError(`Linear4bit: expected bias of shape [${N}] but received ${formatShape(bias.shape)}`);
      this.registerParameter("bias", bias.detach());
    } else {
      this.registerParameter("bias", null);
    }
  }

  /**
   * Quantizes a float weight (outFeatures, inFeatures) on its device with the quantize4bit kernel
   * (nested absmax quantization, when asked, on the host: it is n/blocksize values).
   */
  static fromFloat(weight: Tensor, options: Quantize4bitLayerOptions = {}): Linear4bit {
    checkFloat(weight, "weight", "Linear4bit.fromFloat");
    if (weight.ndim !== 2) throw new ShapeError(`Linear4bit.fromFloat: expected a 2-D weight (out, in) but received ${formatShape(weight.shape)}`);
    const quantType = options.quantType ?? "nf4";
    if (quantType !== "nf4" && quantType !== "fp4") throw new ArgumentError(expected(`"nf4" or "fp4"`, "Linear4bit.fromFloat's quantType", quantType));
    const blocksize = options.blocksize ?? 64;
    if (!(QUANT4_BLOCKSIZES as readonly number[]).includes(blocksize)) {
      throw new ArgumentError(expected(`one of ${QUANT4_BLOCKSIZES.join(", ")}`, "Linear4bit.fromFloat's blocksize", blocksize));
    }
    const n = weight.numel;
    const nBlocks = Math.ceil(n / blocksize);
    const w = dense(weight);
    const packed = empty([Math.ceil(n / 2)], "uint8", weight.device);
    const absmaxT = empty([nBlocks], "float32", weight.device);
    if (n > 0) {
      native().quantize4bit(packed.storage, 0, absmaxT.storage, 0, w.storage, w.byteOffset, dtypeId(weight.dtype), n, blocksize, QuantType[quantType] as QuantTypeId);
    }
    if (w !== weight) w.dispose();
    const absmax = absmaxT.toTypedArray() as Float32Array;
    const base = { quantType, blocksize, dtype: weight.dtype as FloatDType, shape: [...weight.shape], code: quantMap(quantType) };
    let state: QuantState;
    try {
      if (options.compressStatistics ?? false) {
        // bitsandbytes double quantization: centre on the mean (float64 sum rounded to float32), then 8-bit
        // blockwise quantize with the signed dynamic map in blocks of 256 — on the weight's device (the same
        // bytes as @lowbit/dtypes' quantizeBlockwise; a 7B model has ~10^8 absmax values).
        let sum = 0;
        for (const a of absmax) sum += a;
        const offset = Math.fround(sum / Math.max(absmax.length, 1));
        const nested = quantizeNestedAbsmax(absmaxT, offset);
        state = new QuantState({ ...base, absmax: nested.codes, offset, state2: { absmax: nested.absmax, code: DYNAMIC_MAP_SIGNED, blocksize: NESTED_BLOCKSIZE, dtype: "float32" } });
      } else {
        state = new QuantState({ ...base, absmax });
      }
    } finally {
      absmaxT.dispose();
    }
    const layer = new Linear4bit(packed, state, weight.device, options);
    packed.dispose();
    return layer;
  }

  /** Wraps already-quantized data: packed codes (host bytes or a uint8 tensor) and their QuantState. */
  static fromQuantized(packed: Uint8Array | Tensor, state: QuantState, options: Linear4bitOptions & { device?: Device } = {}): Linear4bit {
    if (!(state instanceof QuantState)) throw new ArgumentError(expected("a QuantState", "Linear4bit.fromQuantized's state", state));
    if (packed instanceof Tensor) {
      checkTensor(packed, "packed", "Linear4bit.fromQuantized");
      const device = options.device === undefined ? packed.device : normalizeDevice(options.device);
      return new Linear4bit(packed, state, device, options);
    }
    if (!(packed instanceof Uint8Array)) throw new ArgumentError(expected("a Uint8Array or a uint8 Tensor", "Linear4bit.fromQuantized's packed", packed));
    const device = normalizeDevice(options.device ?? "cpu");
    const t = fromTypedArray(packed, [packed.length], { dtype: "uint8", device });
    const layer = new Linear4bit(t, state, device, options);
    t.dispose();
    return layer;
  }

  /**
   * Reads a bitsandbytes checkpoint's entries for one layer: `${prefix}weight`, the quant-state keys
   * under `${prefix}weight.` and an optional `${prefix}bias` (spec §13.1).
   */
  static fromStateDict(dict: StateDict, prefix = "", options: Linear4bitOptions & { device?: Device } = {}): Linear4bit {
    const p = prefix === "" || prefix.endsWith(".") ? prefix : `${prefix}.`;
    const host: Record<string, StateTensor> = {};
    for (const [key, t] of Object.entries(dict)) {
      if (!key.startsWith(`${p}weight.`)) continue;
      checkTensor(t, `"${key}"`, "Linear4bit.fromStateDict");
      const data = t.toTypedArray();
      if (!(data instanceof Float32Array || data instanceof Uint8Array)) throw new ArgumentError(expected("float32 or uint8 data", `"${key}"`, t.dtype));
      host[key] = { dtype: t.dtype, shape: [...t.shape], data };
    }
    const state = QuantState.fromStateDict(`${p}weight`, host);
    const weight = dict[`${p}weight`];
    if (weight === undefined) throw new ArgumentError(`Linear4bit.fromStateDict: missing key "${p}weight"`);
    checkTensor(weight, `"${p}weight"`, "Linear4bit.fromStateDict");
    const bias = dict[`${p}bias`] ?? options.bias ?? null;
    const device = options.device === undefined ? weight.device : normalizeDevice(options.device);
    const flat = reshape(weight, [weight.numel]);
    const layer = new Linear4bit(flat, state, device, { ...options, bias });
    flat.dispose();
    return layer;
  }

  get weight(): Tensor {
    return this.param("weight");
  }

  get bias(): Tensor | null {
    return this.paramOrNull("bias");
  }

  #tensors(): Quant4Tensors {
    const nested = this.quantState.state2 !== null;
    return {
      packed: this.weight,
      absmax: this.buffer("weight.absmax"),
      nestedAbsmax: nested ? this.buffer("weight.nested_absmax") : null,
      nestedCode: nested ? this.buffer("weight.nested_quant_map") : null,
    };
  }

  /** The float weight (outFeatures, inFeatures) in `dtype` (default the original dtype). */
  dequantizeWeight(dtype: FloatDType = this.quantState.dtype): Tensor {
    return dequant4(this.#tensors(), this.quantState, dtype);
  }

  /** x (..., inFeatures) → (..., outFeatures) in x's dtype. */
  forward(x: Tensor): Tensor {
    checkFloat(x, "x", "Linear4bit");
    const K = this.inFeatures;
    const N = this.outFeatures;
    if (x.ndim === 0 || x.shape[x.ndim - 1] !== K) {
      throw new ShapeError(`Linear4bit: expected x of shape (..., ${K}) but received ${formatShape(x.shape)}`);
    }
    checkSameDevice("Linear4bit", ["x", x], ["weight", this.weight]);
    const cd = this.computeDtype ?? (x.dtype as FloatDType);
    const xc = x.dtype === cd ? x : cast(x, cd);
    const x2 = reshape(xc, [-1, K]); // (M, K)
    let y2 = matmul4bit(x2, this.#tensors(), this.quantState, this.fusedMaxRows); // (M, N)
    const bias = this.bias;
    if (bias !== null) {
      const b = bias.dtype === cd ? bias : cast(bias, cd);
      const withBias = add(y2, b);
      if (b !== bias) b.dispose();
      y2.dispose();
      y2 = withBias;
    }
    const y = reshape(y2, [...x.shape.slice(0, -1), N]);
    y2.dispose();
    x2.dispose();
    if (xc !== x) xc.dispose();
    if (y.dtype === x.dtype) return y;
    const out = cast(y, x.dtype);
    y.dispose();
    return out;
  }

  protected override saveToStateDict(out: StateDict, prefix: string): void {
    super.saveToStateDict(out, prefix);
    out[`${prefix}weight.${this.quantState.jsonKey}`] = this.#stateJson;
  }

  protected override stateEntries(): Array<[string, Tensor, "param" | "buffer"]> {
    return [...super.stateEntries(), [`weight.${this.quantState.jsonKey}`, this.#stateJson, "buffer"]];
  }

  protected override validateStateEntry(key: string, target: Tensor, value: Tensor): void {
    if (key !== `weight.${this.quantState.jsonKey}`) return;
    const mine = new TextDecoder().decode(target.toTypedArray() as Uint8Array);
    const theirs = new TextDecoder().decode(value.toTypedArray() as Uint8Array);
    if (mine !== theirs) {
      throw new ArgumentError(`loadStateDict: the quant state ${theirs} differs from this layer's ${mine}; build the layer with Linear4bit.fromStateDict instead`);
    }
  }

  override dispose(): void {
    super.dispose();
    this.#stateJson.dispose();
  }
}

/** y (M, N) = x (M, K) @ dequant(W)^T, differentiable in x only. */
function matmul4bit(x: Tensor, q: Quant4Tensors, state: QuantState, fusedMaxRows: number): Tensor {
  const [N, K] = state.shape as [number, number];
  const M = x.shape[0]!;
  const dtype = x.dtype as FloatDType;
  const xs = dense(x);
  let out: Tensor;
  if (M <= fusedMaxRows && K % state.blocksize === 0) {
    out = empty([M, N], dtype, x.device);
    if (out.numel > 0) {
      native().gemm4bit(
        out.storage, 0, xs.storage, xs.byteOffset, dtypeId(dtype),
        q.packed.storage, q.packed.byteOffset, q.absmax.storage, q.absmax.byteOffset,
        q.nestedAbsmax?.storage ?? null, q.nestedAbsmax?.byteOffset ?? 0, q.nestedCode?.storage ?? null, q.nestedCode?.byteOffset ?? 0, state.offset ?? 0,
        M, N, K, state.blocksize, QuantType[state.quantType] as QuantTypeId, null, 0,
      );
    }
  } else {
    const w = dequant4(q, state, dtype); // (N, K)
    const wT = w._alias([K, N], [1, K], 0);
    out = matmulRaw(xs, wT);
    wT.dispose();
    w.dispose();
  }
  if (xs !== x) xs.dispose();
  const saved = [q.packed, q.absmax, ...(q.nestedAbsmax && q.nestedCode ? [q.nestedAbsmax, q.nestedCode] : [])];
  return record(
    "linear4bit",
    out,
    [x],
    (g, s) => {
      const tensors: Quant4Tensors = { packed: s[0]!, absmax: s[1]!, nestedAbsmax: s[2] ?? null, nestedCode: s[3] ?? null };
      const w = dequant4(tensors, state, g.dtype as FloatDType); // (N, K)
      return [matmulRaw(g, w)]; // (M, N) @ (N, K)
    },
    saved,
  );
}

export interface Linear8bitLtOptions {
  /** Activation outlier threshold (0 disables the decomposition; transformers uses 6.0). */
  threshold?: number;
  bias?: Tensor | null;
}

/** Linear8bitLt inputs with at most this many rows keep their outlier column list on the device. */
const DEVICE_OUTLIER_ROWS = 8;

/**
 * bitsandbytes Linear8bitLt (has_fp16_weights=False): weight int8 CB (out, in) with row absmax SCB.
 * Forward is LLM.int8 (spec §12.5): x is cast to float16 for its vectorwise quantization only, the
 * int8 product is dequantized with the row/column scales, and with threshold > 0 the outlier columns
 * of x are multiplied by the dequantized weight in x's dtype and added. grad_x = grad_y @ (CB·SCB/127).
 */
export class Linear8bitLt extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly threshold: number;

  private constructor(CB: Tensor, SCB: Tensor, options: Linear8bitLtOptions) {
    super();
    if (CB.dtype !== "int8" || CB.ndim !== 2) throw new ShapeError(`Linear8bitLt: expected an int8 (out, in) weight but received ${formatShape(CB.shape)} ${CB.dtype}`);
    const [N, K] = CB.shape as [number, number];
    if (SCB.dtype !== "float32" || SCB.ndim !== 1 || SCB.shape[0] !== N) {
      throw new ShapeError(`Linear8bitLt: expected SCB float32 of shape [${N}] but received ${formatShape(SCB.shape)} ${SCB.dtype}`);
    }
    if (SCB.device !== CB.device) throw new ArgumentError(`Linear8bitLt: SCB is on ${SCB.device} but the weight is on ${CB.device}`);
    this.outFeatures = N;
    this.inFeatures = K;
    const threshold = options.threshold ?? 0;
    if (typeof threshold !== "number" || !(threshold >= 0)) throw new ArgumentError(expected("a number >= 0", "Linear8bitLt's threshold", threshold));
    this.threshold = threshold;
    this.registerParameter("weight", CB.isContiguous ? CB.detach() : CB.contiguous(), { requiresGrad: false });
    const bias = options.bias ?? null;
    if (bias !== null) {
      checkFloat(bias, "bias", "Linear8bitLt");
      if (bias.ndim !== 1 || bias.shape[0] !== N) throw new ShapeError(`Linear8bitLt: expected bias of shape [${N}] but received ${formatShape(bias.shape)}`);
      this.registerParameter("bias", bias.detach());
    } else {
      this.registerParameter("bias", null);
    }
    this.registerBuffer("SCB", SCB.isContiguous ? SCB.detach() : SCB.contiguous());
    // bitsandbytes' weight_format: 0 = row-major, the only layout it can load.
    this.registerBuffer("weight_format", full([], 0, { dtype: "uint8", device: CB.device }));
  }

  /** Quantizes a float weight (out, in) on its device: CB, SCB = int8_vectorwise_quant(W.to(fp16)). */
  static fromFloat(weight: Tensor, options: Linear8bitLtOptions = {}): Linear8bitLt {
    checkFloat(weight, "weight", "Linear8bitLt.fromFloat");
    if (weight.ndim !== 2) throw new ShapeError(`Linear8bitLt.fromFloat: expected a 2-D weight (out, in) but received ${formatShape(weight.shape)}`);
    const [N, K] = weight.shape as [number, number];
    const wh = noGrad(() => cast(weight, "float16"));
    const CB = empty([N, K], "int8", weight.device);
    const SCB = empty([N], "float32", weight.device);
    if (N * K > 0) native().int8VectorwiseQuant(CB.storage, 0, SCB.storage, 0, wh.storage, wh.byteOffset, dtypeId("float16"), N, K, 0);
    wh.dispose();
    const layer = new Linear8bitLt(CB, SCB, options);
    CB.dispose();
    SCB.dispose();
    return layer;
  }

  /** Wraps an already-quantized weight: CB int8 (out, in) and SCB float32 (out,). */
  static fromQuantized(CB: Tensor, SCB: Tensor, options: Linear8bitLtOptions = {}): Linear8bitLt {
    checkTensor(CB, "CB", "Linear8bitLt.fromQuantized");
    checkTensor(SCB, "SCB", "Linear8bitLt.fromQuantized");
    return new Linear8bitLt(CB, SCB, options);
  }

  get weight(): Tensor {
    return this.param("weight");
  }

  get bias(): Tensor | null {
    return this.paramOrNull("bias");
  }

  get SCB(): Tensor {
    return this.buffer("SCB");
  }

  /** bitsandbytes can only load row-major int8 weights (weight_format 0, spec §12.6); refuse the rest. */
  protected override validateStateEntry(key: string, _target: Tensor, value: Tensor): void {
    if (key !== "weight_format") return;
    const format = value.item();
    if (format !== 0) throw new ArgumentError(`loadStateDict: weight_format ${format} is not loadable; only 0 (row-major) is supported`);
  }

  /** W ≈ fp32(fp32(CB * SCB) * 1/127) (out, in) in `dtype`. */
  dequantizeWeight(dtype: FloatDType = "float32"): Tensor {
    return dequant8(this.weight, this.SCB, dtype);
  }

  /** x (..., inFeatures) → (..., outFeatures) in x's dtype. */
  forward(x: Tensor): Tensor {
    checkFloat(x, "x", "Linear8bitLt");
    const K = this.inFeatures;
    const N = this.outFeatures;
    if (x.ndim === 0 || x.shape[x.ndim - 1] !== K) throw new ShapeError(`Linear8bitLt: expected x of shape (..., ${K}) but received ${formatShape(x.shape)}`);
    const CB = this.weight;
    const SCB = this.SCB;
    checkSameDevice("Linear8bitLt", ["x", x], ["weight", CB]);
    const bias = this.bias;
    const fuseBias = bias !== null && !needsGrad(bias);
    const x2 = reshape(x, [-1, K]); // (M, K)
    const M = x2.shape[0]!;
    const dtype = x.dtype as FloatDType;
    const xs = dense(x2);
    const xh = noGrad(() => cast(xs, "float16")); // quantization input only (spec §12.5 step 1)
    const CA = empty([M, K], "int8", x.device);
    const SCA = empty([M], "float32", x.device);
    const C = empty([M, N], "int32", x.device);
    const out = empty([M, N], dtype, x.device);
    let b: Tensor | null = null;
    if (M * N > 0) {
      const b8 = native();
      // Few rows (decode): the outlier columns stay where they are found — (K + 1,) int32, count then indices — so a
      // CUDA step does not wait for them; the per-output outlier kernel reads the list there. Many rows (prefill) take
      // the list on the host, which sizes the gathered outlier GEMM.
      const onDevice = this.threshold > 0 && M <= DEVICE_OUTLIER_ROWS;
      const list = onDevice ? empty([K + 1], "int32", x.device) : null;
      const cols = M * K > 0
        ? b8.int8VectorwiseQuant(CA.storage, 0, SCA.storage, 0, xh.storage, xh.byteOffset, dtypeId("float16"), M, K, this.threshold, list?.storage ?? null, 0)
        : new Int32Array(0);
      b8.int8Matmul(C.storage, 0, CA.storage, 0, CB.storage, CB.byteOffset, M, N, K);
      b = fuseBias ? (bias.dtype === dtype ? dense(bias) : noGrad(() => cast(bias, dtype))) : null;
      b8.int8MmDequant(out.storage, 0, dtypeId(dtype), C.storage, 0, SCA.storage, 0, SCB.storage, SCB.byteOffset, b?.storage ?? null, b?.byteOffset ?? 0, M, N);
      if (list !== null) {
        if (M * K > 0) b8.int8OutlierMatmulAdd(out.storage, 0, xs.storage, xs.byteOffset, dtypeId(dtype), CB.storage, CB.byteOffset, SCB.storage, SCB.byteOffset, list.storage, 0, -1, M, N, K);
        list.dispose();
      } else if (this.threshold > 0 && cols.length > 0) {
        const colsT = fromTypedArray(cols, [cols.length], { dtype: "int32", device: x.device });
        b8.int8OutlierMatmulAdd(out.storage, 0, xs.storage, xs.byteOffset, dtypeId(dtype), CB.storage, CB.byteOffset, SCB.storage, SCB.byteOffset, colsT.storage, 0, cols.length, M, N, K);
        colsT.dispose();
      }
    }
    if (b !== null && b !== bias) b.dispose();
    for (const t of [xh, CA, SCA, C]) t.dispose();
    if (xs !== x2) xs.dispose();
    let y2 = record(
      "linear8bitLt",
      out,
      [x2],
      (g, [cb, scb]) => {
        const w = dequant8(cb!, scb!, g.dtype as FloatDType); // (N, K)
        return [matmulRaw(g, w)]; // (M, N) @ (N, K)
      },
      [CB, SCB],
    );
    x2.dispose();
    if (bias !== null && !fuseBias) {
      const bc = bias.dtype === dtype ? bias : cast(bias, dtype);
      const withBias = add(y2, bc);
      if (bc !== bias) bc.dispose();
      y2.dispose();
      y2 = withBias;
    }
    const y = reshape(y2, [...x.shape.slice(0, -1), N]);
    y2.dispose();
    return y;
  }
}

/** fp32(fp32(CB * SCB[row]) * 1/127) as bitsandbytes' int8_vectorwise_dequant, then to `dtype`. */
function dequant8(CB: Tensor, SCB: Tensor, dtype: FloatDType): Tensor {
  return noGrad(() => {
    const [N] = CB.shape as [number, number];
    const cf = cast(CB, "float32");
    const s = SCB._alias([N, 1], [SCB.strides[0]!, 0], SCB.offset);
    const prod = binaryRaw("mul", cf, s);
    const w = unaryRaw("scale", prod, INT8_DEQUANT_SCALE);
    for (const t of [cf, s, prod]) t.dispose();
    if (dtype === "float32") return w;
    const wc = cast(w, dtype);
    w.dispose();
    return wc;
  });
}

