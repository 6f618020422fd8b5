// NF4 / FP4 quantization: spec golden vectors, bit-exact parity with the bitsandbytes checkpoint,
// CUDA special cases, error bounds and round-trip properties.

import { describe, expect, it } from "vitest";
import {
  ArgumentError,
  FP4_THRESHOLDS,
  NF4_CODE,
  NF4_THRESHOLDS,
  QUANT4_BLOCKSIZES,
  QuantState,
  dequantize4bit,
  fp4Code,
  nf4Code,
  quantize4bit,
  stateAbsmax,
  type StateTensor,
} from "../src/index.js";
import { bfloat16ToFloat32 } from "../src/float.js";
import { f32, fixturePath, hex, readSafetensors, u16 } from "./helpers/safetensors.js";
import { mulberry32, randn } from "./helpers/random.js";

/** The spec §20 input: x_i = fp32(sin(0.37 i) * (1 + (i mod 7) / 3)), i < 130. */
function goldenInput(): Float32Array {
  return Float32Array.from({ length: 130 }, (_, i) => Math.sin(0.37 * i) * (1 + (i % 7) / 3));
}

describe("spec golden vectors (§20)", () => {
  it("reproduces the absmax, NF4 and FP4 bytes", () => {
    const x = goldenInput();
    const nf4 = quantize4bit(x, { blocksize: 64, quantType: "nf4" });
    expect(Array.from(new Uint32Array((nf4.state.absmax as Float32Array).buffer), (u) => u.toString(16))).toEqual(["403f866a", "403a92d1", "3f91d636"]);
    expect(hex(nf4.packed)).toBe(
      "79bdeee98631004457adfbccb95243222479bdeeed8642100557adefbba8521432347cacdedc9642111167aceffaa8531033357bebcddc95532112479cdefe9830",
    );
    const fp4 = quantize4bit(x, { blocksize: 64, quantType: "fp4" });
    expect(hex(fp4.packed)).toBe(
      "064223261ecabbcce172345546edfddadc164522251ecdabbfe175234476edacdddf1474522569fdaaaae175233771edabcccf142455546fecdaaac164223261cb",
    );
  });
});

describe("code rules", () => {
  it("NF4: code = count of thresholds strictly below xs; ties go low; NaN → 0", () => {
    for (let c = 0; c < 16; c++) expect(nf4Code(NF4_CODE[c]!)).toBe(c);
    for (let i = 0; i < 15; i++) {
      const t = NF4_THRESHOLDS[i]!;
      expect(nf4Code(t)).toBe(i); // exact tie → lower code
      const above = new Float32Array([t]);
      new Uint32Array(above.buffer)[0]! += t > 0 ? 1 : -1; // one ulp above
      expect(nf4Code(above[0]!)).toBe(i + 1);
    }
    expect(nf4Code(NaN)).toBe(0);
    expect(nf4Code(1.5)).toBe(15);
    expect(nf4Code(-1.5)).toBe(0);
  });

  it("FP4: literal thresholds, sign bit for negatives only, NaN → 0", () => {
    const order = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];
    for (let i = 0; i < 7; i++) {
      const t = FP4_THRESHOLDS[i]!;
      expect(fp4Code(t)).toBe(order[i]);
      expect(fp4Code(-t)).toBe(8 | order[i]!);
      const above = new Float32Array([t]);
      new Uint32Array(above.buffer)[0]! += 1;
      expect(fp4Code(above[0]!)).toBe(order[i + 1]);
    }
    expect(fp4Code(NaN)).toBe(0);
    expect(fp4Code(-0)).toBe(0); // −0 counts as non-negative
    expect(fp4Code(-1e-6)).toBe(0b1000); // tiny negative → −0 code (P3)
    // P10: between the t0 literal and the true midpoint the CUDA rule still says magnitude 0.
    const mid = new Float32Array(new Uint32Array([0x3b2aaab0]).buffer)[0]!;
    expect(fp4Code(mid)).toBe(0);
  });
});

describe("CUDA special cases (§7)", () => {
  it("zero blocks give NF4 0x00 bytes and FP4 0x00 bytes, dequantizing to ±0", () => {
    const x = new Float32Array(128);
    x.fill(0.5, 64); // block 0 all zero, block 1 not
    for (const quantType of ["nf4", "fp4"] as const) {
      const { packed, state } = quantize4bit(x, { blocksize: 64, quantType });
      expect([...packed.subarray(0, 32)].every((b) => b === 0)).toBe(true);
      expect((state.absmax as Float32Array)[0]).toBe(0);
      const y = dequantize4bit(packed, state) as Float32Array;
      expect([...y.subarray(0, 64)].every((v) => v === 0)).toBe(true);
      expect(y[64]).toBe(0.5);
    }
  });

  it("NaN elements are skipped by absmax and quantize to code 0", () => {
    const x = Float32Array.from({ length: 64 }, (_, i) => (i + 1) / 64);
    x[3] = NaN;
    const { packed, state } = quantize4bit(x, { blocksize: 64, quantType: "nf4" });
    expect((state.absmax as Float32Array)[0]).toBe(1);
    expect(packed[1]! & 0x0f).toBe(0);
    const y = dequantize4bit(packed, state) as Float32Array;
    expect(y[3]).toBe(-1); // NF4 code 0 is −1 × absmax
  });

  it("an Inf element destroys its block as on CUDA", () => {
    const x = Float32Array.from({ length: 64 }, (_, i) => i / 10);
    x[5] = Infinity;
    const { packed, state } = quantize4bit(x, { blocksize: 64, quantType: "nf4" });
    expect((state.absmax as Float32Array)[0]).toBe(Infinity);
    expect(packed[0]).toBe(0x77); // finite → code of 0
    expect(packed[2]! & 0x0f).toBe(0); // Inf * 0 = NaN → 0
  });

  it("an all-NaN block keeps absmax at -FLT_MAX", () => {
    const x = new Float32Array(64).fill(NaN);
    const { packed, state } = quantize4bit(x, { blocksize: 64, quantType: "nf4" });
    expect(new Uint32Array((state.absmax as Float32Array).buffer)[0]).toBe(0xff7fffff);
    expect([...packed].every((b) => b === 0)).toBe(true);
  });

  it("odd lengths pad the last low nibble with the code of 0.0", () => {
    const x = Float32Array.from({ length: 5 }, (_, i) => i + 1);
    expect(quantize4bit(x, { quantType: "nf4" }).packed[2]! & 0x0f).toBe(7);
    expect(quantize4bit(x, { quantType: "fp4" }).packed[2]! & 0x0f).toBe(0);
  });
});

describe("bit-exact with bitsandbytes (tiny-llama-bnb-nf4)", () => {
  const src = readSafetensors(fixturePath("tiny-llama/model.safetensors"));
  const bnb = readSafetensors(fixturePath("tiny-llama-bnb-nf4/model.safetensors"));
  const layers = [...bnb.keys()].filter((k) => k.endsWith(".weight.quant_state.bitsandbytes__nf4")).map((k) => k.slice(0, -".quant_state.bitsandbytes__nf4".length));

  it("finds the 14 quantized linear layers", () => {
    expect(layers).toHaveLength(14);
  });

  for (const name of layers) {
    it(`${name}: packed weight, absmax codes, nested state, maps and JSON are byte-identical`, () => {
      const w = src.get(name)!;
      expect(w.dtype).toBe("BF16");
      // transformers loaded the bf16 checkpoint in float32 (config dtype), so bitsandbytes quantized float32 values.
      const values = bfloat16ToFloat32(u16(w));
      const { packed, state } = quantize4bit(values, { shape: w.shape, blocksize: 64, quantType: "nf4", compressStatistics: true });
      const ref = bnb.get(name)!;
      expect(ref.dtype).toBe("U8");
      expect(ref.shape).toEqual([packed.length, 1]);
      expect(hex(packed)).toBe(hex(ref.bytes));
      const dict = state.toStateDict(name);
      const expectedKeys = ["absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state.bitsandbytes__nf4"].map((k) => `${name}.${k}`);
      expect(Object.keys(dict)).toEqual(expectedKeys);
      for (const key of expectedKeys) {
        const mine = dict[key]!;
        const theirs = bnb.get(key)!;
        expect(mine.shape, key).toEqual(theirs.shape);
        expect(hex(new Uint8Array(mine.data.buffer, mine.data.byteOffset, mine.data.byteLength)), key).toBe(hex(theirs.bytes));
      }
    });

    it(`${name}: loading the checkpoint's state and dequantizing gives bitsandbytes' weights`, () => {
      const tensors = new Map<string, StateTensor>();
      for (const [k, t] of bnb) {
        if (!k.startsWith(`${name}.`)) continue;
        const data = t.dtype === "F32" ? f32(t) : t.bytes;
        tensors.set(k, { dtype: t.dtype === "F32" ? "float32" : "uint8", shape: t.shape, data });
      }
      const state = QuantState.fromStateDict(name, tensors);
      expect(state.nested).toBe(true);
      expect(state.dtype).toBe("float32");
      expect(state.shape).toEqual(src.get(name)!.shape);
      const codes = bnb.get(name)!.bytes;
      const y = dequantize4bit(codes, state) as Float32Array;
      // bitsandbytes' standalone path, written out from the raw checkpoint tensors:
      // absmax_b = fp32(fp32(dyn[q_b] * nested_absmax[b / 256]) + nested_offset); y_i = fp32(NF4[c_i] * absmax_{i/64}).
      const q = bnb.get(`${name}.absmax`)!.bytes;
      const nested = f32(bnb.get(`${name}.nested_absmax`)!);
      const dyn = f32(bnb.get(`${name}.nested_quant_map`)!);
      const lut = f32(bnb.get(`${name}.quant_map`)!);
      const meta = JSON.parse(new TextDecoder().decode(bnb.get(`${name}.quant_state.bitsandbytes__nf4`)!.bytes)) as { nested_offset: number };
      const offset = Math.fround(meta.nested_offset);
      const src32 = bfloat16ToFloat32(u16(src.get(name)!));
      let maxErr = 0;
      for (let i = 0; i < y.length; i++) {
        const b = i >> 6;
        const am = Math.fround(Math.fround(dyn[q[b]!]! * nested[b >> 8]!) + offset);
        const c = (codes[i >> 1]! >> (i % 2 === 0 ? 4 : 0)) & 15;
        const ref = Math.fround(lut[c]! * am);
        if (y[i] !== ref) expect(y[i], `element ${i}`).toBe(ref);
        maxErr = Math.max(maxErr, Math.abs(y[i]! - src32[i]!) / am);
      }
      expect(maxErr).toBeLessThan(0.2); // within one NF4 step of the bf16 source
    });
  }
});

describe("error bounds on N(0,1) 1024×1024 (spec §19.3)", () => {
  const x = randn(1024 * 1024, 1234);
  const limits: Record<"nf4" | "fp4", Record<number, [number, number]>> = {
    nf4: { 32: [0.068229, 0.191854], 64: [0.073316, 0.205719], 128: [0.077468, 0.217974], 256: [0.081051, 0.228891], 512: [0.084548, 0.239887], 1024: [0.087919, 0.24957], 2048: [0.091349, 0.259392], 4096: [0.095067, 0.269466] },
    fp4: { 32: [0.089562, 0.244753], 64: [0.09732, 0.262778], 128: [0.103907, 0.278848], 256: [0.109958, 0.29331], 512: [0.115753, 0.306962], 1024: [0.121573, 0.320299], 2048: [0.127741, 0.333292], 4096: [0.13382, 0.345842] },
  };
  for (const quantType of ["nf4", "fp4"] as const) {
    for (const bs of QUANT4_BLOCKSIZES) {
      it(`${quantType} bs ${bs}`, () => {
        const { packed, state } = quantize4bit(x, { blocksize: bs, quantType });
        const y = dequantize4bit(packed, state) as Float32Array;
        let abs = 0;
        let rel = 0;
        for (let i = 0; i < x.length; i++) {
          const d = Math.abs(y[i]! - x[i]!);
          abs += d;
          rel += d / (Math.abs(x[i]!) + 1e-8);
        }
        const [absLimit, relLimit] = limits[quantType][bs]!;
        expect(abs / x.length).toBeLessThan(absLimit);
        expect(rel / x.length).toBeLessThan(relLimit);
      });
    }
  }

  it("double quantization stays within the compressed-stats bounds (abs < 0.11, rel < 0.28)", () => {
    for (const bs of [32, 64, 128]) {
      const { packed, state } = quantize4bit(x, { blocksize: bs, quantType: "nf4", compressStatistics: true });
      const y = dequantize4bit(packed, state) as Float32Array;
      let abs = 0;
      let rel = 0;
      for (let i = 0; i < x.length; i++) {
        const d = Math.abs(y[i]! - x[i]!);
        abs += d;
        rel += d / (Math.abs(x[i]!) + 1e-15);
      }
      expect(abs / x.length).toBeLessThan(0.11);
      expect(rel / x.length).toBeLessThan(0.28);
    }
  });
});

describe("round-trip properties", () => {
  it("random shapes, blocksizes and odd lengths dequantize to within one code step of the input", () => {
    const rand = mulberry32(7);
    for (let trial = 0; trial < 60; trial++) {
      const n = 1 + Math.floor(rand() * 3000);
      const bs = QUANT4_BLOCKSIZES[Math.floor(rand() * QUANT4_BLOCKSIZES.length)]!;
      const quantType = rand() < 0.5 ? "nf4" : "fp4";
      const nested = rand() < 0.5;
      const x = randn(n, trial + 100);
      for (let i = 0; i < n; i++) x[i] = x[i]! * (0.01 + rand() * 10);
      const { packed, state } = quantize4bit(x, { blocksize: bs, quantType, compressStatistics: nested });
      expect(packed.length).toBe(Math.ceil(n / 2));
      expect(state.absmax.length).toBe(Math.ceil(n / bs));
      const y = dequantize4bit(packed, state) as Float32Array;
      const absmax = stateAbsmax(state); // as reconstructed (nested: approximately)
      for (let i = 0; i < n; i++) {
        const b = Math.floor(i / bs);
        let trueMax = 0;
        for (let j = b * bs; j < Math.min(n, (b + 1) * bs); j++) trueMax = Math.max(trueMax, Math.abs(x[j]!));
        // |x - y| <= half the widest code gap (NF4 0.16, FP4 1/6 of absmax) + the absmax reconstruction error.
        const bound = 0.17 * Math.max(trueMax, absmax[b]!) + Math.abs(trueMax - absmax[b]!) + 1e-6 * trueMax;
        if (!(Math.abs(y[i]! - x[i]!) <= bound)) expect(Math.abs(y[i]! - x[i]!)).toBeLessThanOrEqual(bound);
        if (!nested) expect(absmax[b]).toBe(Math.fround(trueMax));
      }
      // Quantizing the dequantized values is a fixed point for plain states (FP4's −0 code may come
      // back as +0, so compare values, not bytes).
      if (!nested) {
        const again = quantize4bit(y, { blocksize: bs, quantType });
        const y2 = dequantize4bit(again.packed, again.state) as Float32Array;
        for (let i = 0; i < n; i++) if (y2[i] !== y[i]) expect(y2[i]).toBe(y[i]);
      }
    }
  });

  it("float16 and bfloat16 inputs return their dtype", () => {
    const x = randn(256, 3);
    const bf = new Uint16Array(x.length);
    const view = new Uint32Array(x.buffer);
    for (let i = 0; i < x.length; i++) bf[i] = view[i]! >>> 16;
    const { packed, state } = quantize4bit(bf, { dtype: "bfloat16" });
    expect(state.dtype).toBe("bfloat16");
    expect(dequantize4bit(packed, state)).toBeInstanceOf(Uint16Array);
  });
});

describe("bad arguments", () => {
  it("throws typed errors naming the argument", () => {
    const x = new Float32Array(64);
    expect(() => quantize4bit(x, { blocksize: 48 })).toThrowError(ArgumentError);
    expect(() => quantize4bit(x, { blocksize: 48 })).toThrowError(/blocksize/);
    expect(() => quantize4bit(x, { quantType: "int4" as "nf4" })).toThrowError(/quantType/);
    expect(() => quantize4bit([1, 2] as unknown as Float32Array)).toThrowError(/values/);
    expect(() => quantize4bit(new Uint16Array(4))).toThrowError(/dtype/);
    expect(() => quantize4bit(x, { shape: [3, 3] })).toThrowError(/shape/);
    const { packed, state } = quantize4bit(x);
    expect(() => dequantize4bit(packed.subarray(1), state)).toThrowError(/packed/);
    expect(() => dequantize4bit(packed, state, "int8" as "float32")).toThrowError(/outDtype/);
  });
});
