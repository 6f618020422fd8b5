import { readFileSync } from "node:fs";
import { describe, it, expect } from "vitest";
import { ArgumentError, DTypeError, ShapeError } from "../src/errors.js";
import {
  bf16BitsToF32,
  bfloat16ToFloat32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  f32ToF8E4M3FNBits,
  f32ToF8E5M2Bits,
  f8E4M3FNBitsToF32,
  f8E5M2BitsToF32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
  float32ToFloat8E4M3FN,
  float32ToFloat8E5M2,
  float8E4M3FNToFloat32,
  float8E5M2ToFloat32,
  fromFloat32,
  toFloat32,
} from "../src/float.js";

type Format = "float16" | "bfloat16" | "float8_e4m3fn" | "float8_e5m2";

/** Independent decoding from sign / exponent / mantissa with Math.pow. */
function referenceDecode(format: Format, code: number): number {
  const [ebits, mbits] = { float16: [5, 10], bfloat16: [8, 7], float8_e4m3fn: [4, 3], float8_e5m2: [5, 2] }[format] as [number, number];
  const bias = Math.pow(2, ebits - 1) - 1;
  const sign = code >> (ebits + mbits) ? -1 : 1;
  const e = (code >> mbits) & ((1 << ebits) - 1);
  const m = code & ((1 << mbits) - 1);
  const emax = (1 << ebits) - 1;
  if (format === "float8_e4m3fn") {
    if (e === emax && m === (1 << mbits) - 1) return NaN; // e4m3fn: only S.1111.111 is NaN, no infinities
  } else if (e === emax) {
    return m === 0 ? sign * Infinity : NaN;
  }
  if (e === 0) return sign * m * Math.pow(2, 1 - bias - mbits);
  return sign * (1 + m / Math.pow(2, mbits)) * Math.pow(2, e - bias);
}

function isNaNCode(format: Format, code: number): boolean {
  return Number.isNaN(referenceDecode(format, code));
}

/** A Float32Array holding exactly these float32 bit patterns. */
function f32FromBitsArray(bits: ArrayLike<number>): Float32Array {
  return new Float32Array(Uint32Array.from(bits).buffer);
}

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

const ARRAY = {
  float16: { encode: float32ToFloat16, decode: float16ToFloat32, encodeScalar: f32ToF16Bits, decodeScalar: f16BitsToF32, size: 0x10000 },
  bfloat16: { encode: float32ToBfloat16, decode: bfloat16ToFloat32, encodeScalar: f32ToBf16Bits, decodeScalar: bf16BitsToF32, size: 0x10000 },
  float8_e4m3fn: { encode: float32ToFloat8E4M3FN, decode: float8E4M3FNToFloat32, encodeScalar: f32ToF8E4M3FNBits, decodeScalar: f8E4M3FNBitsToF32, size: 0x100 },
  float8_e5m2: { encode: float32ToFloat8E5M2, decode: float8E5M2ToFloat32, encodeScalar: f32ToF8E5M2Bits, decodeScalar: f8E5M2BitsToF32, size: 0x100 },
} as const;

function encodeAny(format: Format, src: Float32Array): Uint8Array | Uint16Array {
  return ARRAY[format].encode(src);
}

function decodeAny(format: Format, codes: number[] | Uint32Array): Float32Array {
  if (format === "float16" || format === "bfloat16") return ARRAY[format].decode(Uint16Array.from(codes));
  return ARRAY[format].decode(Uint8Array.from(codes));
}

function allCodes(format: Format): Uint32Array {
  const n = ARRAY[format].size;
  const codes = new Uint32Array(n);
  for (let i = 0; i < n; i++) codes[i] = i;
  return codes;
}

/** The code a NaN code becomes after decoding and re-encoding. */
function nanRoundTrip(format: Format, code: number): number {
  switch (format) {
    case "float16":
      return code | 0x0200; // quiet bit set, payload and sign kept
    case "bfloat16":
      return (code & 0x8000) | 0x7fc0; // canonical quiet NaN, sign kept
    case "float8_e4m3fn":
    case "float8_e5m2":
      return (code & 0x80) | 0x7f;
  }
}

const FORMATS: Format[] = ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"];

describe.each(FORMATS)("%s: every bit pattern", (format) => {
  const codes = allCodes(format);
  const decoded = decodeAny(format, codes);

  it("decodes to the independently computed value (array and scalar)", () => {
    let bad = 0;
    for (let i = 0; i < codes.length; i++) {
      const want = referenceDecode(format, i);
      if (!Object.is(decoded[i], want) || !Object.is(ARRAY[format].decodeScalar(i), want)) bad++;
    }
    expect(bad).toBe(0);
  });

  it("round-trips through float32 (NaN stays NaN)", () => {
    const back = encodeAny(format, decoded);
    let bad = 0;
    for (let i = 0; i < codes.length; i++) {
      const want = isNaNCode(format, i) ? nanRoundTrip(format, i) : i;
      if (back[i] !== want) bad++;
      if (!Number.isNaN(decoded[i]!) && ARRAY[format].encodeScalar(decoded[i]!) !== i) bad++;
    }
    expect(bad).toBe(0);
  });
});

describe("NaN bit patterns on decode (torch's)", () => {
  it("float16 sets the quiet bit and keeps sign and payload", () => {
    const got = bitsOf(float16ToFloat32(Uint16Array.from([0x7c01, 0x7d00, 0x7e00, 0xfc01, 0x7fff])));
    expect([...got]).toEqual([0x7fc02000, 0x7fe00000, 0x7fc00000, 0xffc02000, 0x7fffe000]);
  });
  it("bfloat16 is a plain shift", () => {
    const got = bitsOf(bfloat16ToFloat32(Uint16Array.from([0x7f81, 0xffc0, 0x7fff])));
    expect([...got]).toEqual([0x7f810000, 0xffc00000, 0x7fff0000]);
  });
  it("float8_e4m3fn 0x7f / 0xff decode to 0x7ff00000 / 0xfff00000", () => {
    expect([...bitsOf(float8E4M3FNToFloat32(Uint8Array.from([0x7f, 0xff])))]).toEqual([0x7ff00000, 0xfff00000]);
  });
  it("float8_e5m2 NaNs decode like the float16 with the same top byte", () => {
    const got = bitsOf(float8E5M2ToFloat32(Uint8Array.from([0x7d, 0x7e, 0x7f, 0xfd])));
    expect([...got]).toEqual([0x7fe00000, 0x7fc00000, 0x7fe00000, 0xffe00000]);
  });
});

// [input, expected bits]; inputs are numbers (rounded to float32 first) or float32 bit patterns as { bits }.
type Case = [number | { bits: number }, number];
const P = Math.pow;
const ULP1 = P(2, -23); // float32 ulp of 1

const EDGE_CASES: Record<Format, Case[]> = {
  float16: [
    [1 + P(2, -11), 0x3c00], // halfway between 1 and 1+2^-10: ties to even (down)
    [1 + 3 * P(2, -11), 0x3c02], // halfway between 0x3c01 and 0x3c02: ties to even (up)
    [1 + P(2, -11) + ULP1, 0x3c01], // just above halfway
    [1 + P(2, -11) - ULP1, 0x3c00], // just below halfway
    [-(1 + 3 * P(2, -11)), 0xbc02],
    [65504, 0x7bff], // largest finite
    [65520 - P(2, -8), 0x7bff], // just below the overflow midpoint
    [65520, 0x7c00], // midpoint between 65504 and 2^16: ties to even = inf
    [-65520, 0xfc00],
    [1e30, 0x7c00],
    [3.4028234663852886e38, 0x7c00], // float32 max
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [P(2, -24), 0x0001], // smallest subnormal
    [P(2, -25), 0x0000], // halfway below the smallest subnormal: to even (0)
    [-P(2, -25), 0x8000],
    [P(2, -25) * (1 + ULP1), 0x0001], // just above that halfway
    [3 * P(2, -25), 0x0002], // subnormal tie, to even (up)
    [5 * P(2, -25), 0x0002], // subnormal tie, to even (down)
    [P(2, -14), 0x0400], // smallest normal
    [P(2, -14) - P(2, -25), 0x0400], // halfway between the largest subnormal and the smallest normal
    [P(2, -14) - P(2, -24), 0x03ff], // largest subnormal
    [1.401298464324817e-45, 0x0000], // float32 smallest subnormal
    [0, 0x0000],
    [-0, 0x8000],
    [NaN, 0x7e00],
    [{ bits: 0xffc00000 }, 0xfe00], // -NaN keeps its sign
    [{ bits: 0x7f800001 }, 0x7e00], // signalling NaN is quieted, never inf
    [{ bits: 0x7f812345 }, 0x7e09], // payload's top bits kept
  ],
  bfloat16: [
    [1 + P(2, -8), 0x3f80], // halfway: ties to even (down)
    [1 + 3 * P(2, -8), 0x3f82], // halfway: ties to even (up)
    [1 + P(2, -8) + ULP1, 0x3f81],
    [1 + P(2, -8) - ULP1, 0x3f80],
    [{ bits: 0x7f7f0000 }, 0x7f7f], // largest finite
    [{ bits: 0x7f7f7fff }, 0x7f7f], // just below the overflow midpoint
    [{ bits: 0x7f7f8000 }, 0x7f80], // overflow midpoint: ties to even = inf
    [{ bits: 0x7f7fffff }, 0x7f80], // float32 max rounds to inf
    [{ bits: 0xff7fffff }, 0xff80],
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [{ bits: 0x00010000 }, 0x0001], // smallest subnormal
    [{ bits: 0x00008000 }, 0x0000], // halfway below it: to even (0)
    [{ bits: 0x80008000 }, 0x8000],
    [{ bits: 0x00008001 }, 0x0001], // just above that halfway
    [{ bits: 0x00018000 }, 0x0002], // subnormal tie, to even (up)
    [{ bits: 0x007f8000 }, 0x0080], // halfway between the largest subnormal and the smallest normal
    [0, 0x0000],
    [-0, 0x8000],
    [NaN, 0x7fc0],
    [{ bits: 0xffc00000 }, 0xffc0], // -NaN keeps its sign
    [{ bits: 0x7f800001 }, 0x7fc0], // signalling NaN whose truncation would be inf
    [{ bits: 0x7fffffff }, 0x7fc0], // NaN whose rounding would carry into the sign
  ],
  float8_e4m3fn: [
    [1 + P(2, -4), 0x38], // halfway: ties to even (down)
    [1 + 3 * P(2, -4), 0x3a], // halfway: ties to even (up)
    [1 + P(2, -4) + ULP1, 0x39],
    [1 + P(2, -4) - ULP1, 0x38],
    [448, 0x7e], // largest finite
    [-448, 0xfe],
    [416 + 16, 0x7e], // 432: halfway between 416 (0x7d, odd) and 448: to even (up)
    [464 - P(2, -15), 0x7e],
    [464, 0x7e], // torch 2.13 saturates: 464 and up (ml_dtypes: NaN) ...
    [479.99996948242188, 0x7e],
    [480, 0x7e],
    [1e30, 0x7e],
    [Infinity, 0x7e], // ... and so does inf
    [-Infinity, 0xfe],
    [P(2, -9), 0x01], // smallest subnormal
    [P(2, -10), 0x00], // halfway below it: to even (0)
    [-P(2, -10), 0x80],
    [P(2, -10) * (1 + ULP1), 0x01],
    [3 * P(2, -10), 0x02], // subnormal tie, to even (up)
    [5 * P(2, -10), 0x02], // subnormal tie, to even (down)
    [P(2, -6), 0x08], // smallest normal
    [P(2, -6) - P(2, -10), 0x08], // halfway between the largest subnormal and the smallest normal
    [7 * P(2, -9), 0x07], // largest subnormal
    [0, 0x00],
    [-0, 0x80],
    [NaN, 0x7f],
    [{ bits: 0xffc00000 }, 0xff],
    [{ bits: 0x7f800001 }, 0x7f],
  ],
  float8_e5m2: [
    [1 + P(2, -3), 0x3c], // halfway: ties to even (down)
    [1 + 3 * P(2, -3), 0x3e], // halfway: ties to even (up)
    [1 + P(2, -3) + ULP1, 0x3d],
    [1 + P(2, -3) - ULP1, 0x3c],
    [57344, 0x7b], // largest finite
    [61440 - P(2, -8), 0x7b], // just below the overflow midpoint
    [61440, 0x7c], // overflow midpoint: ties to even = inf
    [-61440, 0xfc],
    [1e30, 0x7c],
    [Infinity, 0x7c],
    [-Infinity, 0xfc],
    [P(2, -16), 0x01], // smallest subnormal
    [P(2, -17), 0x00], // halfway below it: to even (0)
    [-P(2, -17), 0x80],
    [P(2, -17) * (1 + ULP1), 0x01],
    [3 * P(2, -17), 0x02], // subnormal tie, to even (up)
    [5 * P(2, -17), 0x02], // subnormal tie, to even (down)
    [P(2, -14), 0x04], // smallest normal
    [P(2, -14) - P(2, -17), 0x04], // halfway between the largest subnormal and the smallest normal
    [3 * P(2, -16), 0x03], // largest subnormal
    [0, 0x00],
    [-0, 0x80],
    [NaN, 0x7f],
    [{ bits: 0xffc00000 }, 0xff],
    [{ bits: 0x7f800001 }, 0x7f],
  ],
};

describe.each(FORMATS)("%s: rounding edge cases", (format) => {
  it.each(EDGE_CASES[format].map(([x, want]) => [typeof x === "number" ? String(x) : `bits 0x${x.bits.toString(16)}`, x, want] as const))(
    "%s",
    (_label, x, want) => {
      const src = typeof x === "number" ? Float32Array.of(x) : f32FromBitsArray([x.bits]);
      expect(encodeAny(format, src)[0]).toBe(want);
      if (typeof x === "number") expect(ARRAY[format].encodeScalar(x)).toBe(want);
    },
  );
});

describe("scalar helpers", () => {
  it("round the input to float32 first", () => {
    // 1 + 2^-11 + 2^-30 is above float16's halfway as a double, but exactly on it once rounded to float32.
    expect(f32ToF16Bits(1 + P(2, -11) + P(2, -30))).toBe(0x3c00);
    expect(f32ToBf16Bits(1 + P(2, -8) + P(2, -30))).toBe(0x3f80);
  });
  it("use only the low bits of a code", () => {
    expect(f16BitsToF32(0x13c00)).toBe(1);
    expect(bf16BitsToF32(0x13f80)).toBe(1);
    expect(f8E4M3FNBitsToF32(0x138)).toBe(1);
    expect(f8E5M2BitsToF32(0x13c)).toBe(1);
  });
});

interface Fixture {
  torch: string;
  encode: { input: number[] } & Record<Format, number[]>;
  decode: Record<Format, { code: number[]; bits: number[] }>;
}

const fixture = JSON.parse(readFileSync(new URL("./fixtures/float-torch.json", import.meta.url), "utf8")) as Fixture;

describe(`torch ${fixture.torch} fixture`, () => {
  const input = Uint32Array.from(fixture.encode.input);
  const src = new Float32Array(input.buffer);

  it.each(FORMATS)("encode %s matches torch", (format) => {
    const got = encodeAny(format, src);
    const want = fixture.encode[format];
    expect(want.length).toBe(input.length);
    const mismatches: string[] = [];
    for (let i = 0; i < input.length; i++) {
      const bits = input[i]!;
      let expected = want[i]!;
      if (format === "bfloat16" && (bits & 0x7fffffff) > 0x7f800000) {
        // torch's scalar bfloat16 kernel gives 0x7fc0 for every NaN (its AVX2 / AVX-512 kernels give
        // 0xffff); we keep the sign, as ml_dtypes does.
        expect(expected).toBe(0x7fc0);
        expected = ((bits >>> 16) & 0x8000) | 0x7fc0;
      }
      if (got[i] !== expected) mismatches.push(`0x${bits.toString(16)}: got 0x${got[i]!.toString(16)}, torch 0x${expected.toString(16)}`);
      else if ((bits & 0x7fffffff) <= 0x7f800000 && ARRAY[format].encodeScalar(src[i]!) !== expected) mismatches.push(`scalar 0x${bits.toString(16)}`);
    }
    expect(mismatches).toEqual([]);
  });

  it.each(FORMATS)("decode %s matches torch's float32 bits", (format) => {
    const { code, bits } = fixture.decode[format];
    expect([...bitsOf(decodeAny(format, code))]).toEqual(bits);
  });
});

describe("array API", () => {
  it("writes into a given out array and returns it", () => {
    const src = Float32Array.of(1, -2, 0.5);
    const out16 = new Uint16Array(3);
    expect(float32ToFloat16(src, out16)).toBe(out16);
    expect([...out16]).toEqual([0x3c00, 0xc000, 0x3800]);
    const out8 = new Uint8Array(3);
    expect(float32ToFloat8E4M3FN(src, out8)).toBe(out8);
    const outF = new Float32Array(3);
    expect(float8E4M3FNToFloat32(out8, outF)).toBe(outF);
    expect([...outF]).toEqual([1, -2, 0.5]);
  });

  it("handles out sharing src's memory", () => {
    // float16 codes in the first half of a buffer, decoded in place over the whole buffer.
    const buf = new ArrayBuffer(16);
    const codes = new Uint16Array(buf, 0, 4);
    codes.set([0x3c00, 0xc000, 0x3800, 0x7c00]);
    const out = new Float32Array(buf);
    float16ToFloat32(codes, out);
    expect([...out]).toEqual([1, -2, 0.5, Infinity]);
    // ... and encoded back in place.
    const back = new Uint8Array(buf, 4, 4);
    float32ToFloat8E5M2(out, back);
    expect([...back]).toEqual([0x3c, 0xc0, 0x38, 0x7c]);
  });

  it("works on subarray views", () => {
    const all = Float32Array.of(9, 1, 2, 9);
    expect([...float32ToBfloat16(all.subarray(1, 3))]).toEqual([0x3f80, 0x4000]);
    const codes = Uint16Array.of(0, 0x3f80, 0x4000, 0);
    expect([...bfloat16ToFloat32(codes.subarray(1, 3))]).toEqual([1, 2]);
  });

  it("rejects an out array of the wrong length with ShapeError", () => {
    expect(() => float32ToFloat16(new Float32Array(3), new Uint16Array(2))).toThrow(ShapeError);
    expect(() => float8E5M2ToFloat32(new Uint8Array(3), new Float32Array(4))).toThrow(ShapeError);
  });

  it("rejects typed arrays of the wrong type with DTypeError, other values with ArgumentError", () => {
    const f = float32ToFloat16 as (src: unknown, out?: unknown) => unknown;
    expect(() => f(new Float64Array(2))).toThrow(DTypeError);
    expect(() => f(new Float64Array(2))).toThrow("Expected a Float32Array for src but received Float64Array(2)");
    expect(() => f([1, 2])).toThrow(ArgumentError);
    expect(() => f(new Float32Array(2), new Uint8Array(2))).toThrow(DTypeError);
    expect(() => f(new Float32Array(2), null)).toThrow(ArgumentError);
    const g = bfloat16ToFloat32 as (src: unknown) => unknown;
    expect(() => g(new Int16Array(2))).toThrow(DTypeError);
    expect(() => g("abc")).toThrow(ArgumentError);
  });
});

describe("toFloat32 / fromFloat32", () => {
  const src = Float32Array.of(1, -0.5, 3, -Infinity);

  it.each(["float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"] as const)("%s round-trips exact values", (dtype) => {
    const enc = fromFloat32(src, dtype);
    const dec = toFloat32(enc, dtype);
    expect(dec).toBeInstanceOf(Float32Array);
    expect(dec).not.toBe(src);
    // e4m3fn has no infinity: torch saturates it to -448.
    expect([...dec]).toEqual(dtype === "float8_e4m3fn" ? [1, -0.5, 3, -448] : [...src]);
  });

  it("returns the storage array of each dtype", () => {
    expect(fromFloat32(src, "float32")).toBeInstanceOf(Float32Array);
    expect(fromFloat32(src, "float16")).toBeInstanceOf(Uint16Array);
    expect(fromFloat32(src, "bfloat16")).toBeInstanceOf(Uint16Array);
    expect(fromFloat32(src, "float8_e4m3fn")).toBeInstanceOf(Uint8Array);
    expect(fromFloat32(src, "float8_e5m2")).toBeInstanceOf(Uint8Array);
    const copy = fromFloat32(src, "float32");
    expect(copy).not.toBe(src);
    expect([...copy]).toEqual([...src]);
  });

  it("rejects other dtypes and mismatched arrays", () => {
    expect(() => toFloat32(src, "int8" as "float32")).toThrow(DTypeError);
    expect(() => fromFloat32(src, "nf4" as "float32")).toThrow(DTypeError);
    expect(() => toFloat32(src, "float16")).toThrow(DTypeError);
    expect(() => toFloat32(new Uint8Array(2), "bfloat16")).toThrow(DTypeError);
  });
});
