// 8-bit blockwise quantization: golden vector, exact nearest-code search with even-index ties,
// the dynamic maps, error bounds and special cases.

import { describe, expect, it } from "vitest";
import {
  BLOCKWISE8_BLOCKSIZES,
  DYNAMIC_MAP_SIGNED,
  DYNAMIC_MAP_UNSIGNED,
  dequantizeBlockwise,
  nearestCode8,
  quantizeBlockwise,
} from "../src/index.js";
import { hex } from "./helpers/safetensors.js";
import { mulberry32, randn } from "./helpers/random.js";

describe("dynamic maps", () => {
  it("have the documented landmarks and are strictly increasing", () => {
    expect(DYNAMIC_MAP_SIGNED[0]).toBe(Math.fround(-0.99296875));
    expect(DYNAMIC_MAP_SIGNED[127]).toBe(0);
    expect(DYNAMIC_MAP_SIGNED[255]).toBe(1);
    expect(DYNAMIC_MAP_UNSIGNED[0]).toBe(0);
    expect(DYNAMIC_MAP_UNSIGNED[254]).toBe(Math.fround(0.996484375));
    for (const map of [DYNAMIC_MAP_SIGNED, DYNAMIC_MAP_UNSIGNED]) {
      for (let i = 1; i < 256; i++) expect(map[i]!).toBeGreaterThan(map[i - 1]!);
    }
  });
});

describe("nearest-code search", () => {
  it("returns the nearest code, and the even index on exact midpoint ties", () => {
    for (const map of [DYNAMIC_MAP_SIGNED, DYNAMIC_MAP_UNSIGNED]) {
      for (let i = 0; i < 256; i++) expect(nearestCode8(map[i]!, map)).toBe(i);
      for (let i = 0; i < 255; i++) {
        const mid = Math.fround(map[i]! + map[i + 1]!) * 0.5;
        if (Math.fround(mid) !== mid) continue; // not representable: no exact tie possible
        expect(nearestCode8(mid, map), `tie between ${i} and ${i + 1}`).toBe(i % 2 === 0 ? i : i + 1);
      }
    }
    expect(nearestCode8(NaN, DYNAMIC_MAP_SIGNED)).toBe(0);
  });

  it("agrees with a brute-force nearest search off ties", () => {
    const rand = mulberry32(5);
    for (let k = 0; k < 20000; k++) {
      const xs = Math.fround(rand() * 2.2 - 1.1);
      let best = 0;
      for (let i = 1; i < 256; i++) if (Math.abs(DYNAMIC_MAP_SIGNED[i]! - xs) < Math.abs(DYNAMIC_MAP_SIGNED[best]! - xs)) best = i;
      expect(nearestCode8(xs, DYNAMIC_MAP_SIGNED)).toBe(best);
    }
  });
});

describe("quantizeBlockwise", () => {
  it("reproduces the spec §20 golden codes", () => {
    const x = Float32Array.from({ length: 130 }, (_, i) => Math.sin(0.37 * i) * (1 + (i % 7) / 3));
    const { codes } = quantizeBlockwise(x, { blocksize: 64 });
    expect(hex(codes)).toBe(
      "7fc3d2e2eff4f0c4b83f2d1a0a0031313995cce2f7cfd6d7d0c13a2033281f1c2231a0c0cddbe7ece9dcaf433120110807373c9fc9def1ffced0cbbf3b240d3026232733a4d4c8d5e0e6e4d8c3493525170e0d173fa0c7d9ebf8fdcac7b93c2711002e2a2c37a7d1ebced8deddd3c136392c1f16151d2fa1c5d4e4f0f5f0c3b12e00",
    );
  });

  it("zero blocks give code 0 (−0.0 after dequant), as on CUDA", () => {
    const { codes, absmax, blocksize, code } = quantizeBlockwise(new Float32Array(64), { blocksize: 64 });
    expect([...codes].every((c) => c === 0)).toBe(true);
    const y = dequantizeBlockwise(codes, { absmax, blocksize, code }) as Float32Array;
    expect(Object.is(y[0], -0)).toBe(true);
  });

  const cases = [
    { name: "randn, signed", gen: (s: number) => randn(1 << 20, s), code: DYNAMIC_MAP_SIGNED, abs: 0.011, rel: 0.018 },
    { name: "rand, signed", gen: (s: number) => Float32Array.from({ length: 1 << 20 }, mulberry32(s)), code: DYNAMIC_MAP_SIGNED, abs: 0.0036, rel: 0.015 },
    { name: "rand, unsigned", gen: (s: number) => Float32Array.from({ length: 1 << 20 }, mulberry32(s)), code: DYNAMIC_MAP_UNSIGNED, abs: 0.0023, rel: 0.012 },
  ];
  for (const c of cases) {
    it(`meets the upstream error bounds (${c.name}, 1024×1024, every blocksize)`, () => {
      const x = c.gen(11);
      for (const blocksize of BLOCKWISE8_BLOCKSIZES) {
        const q = quantizeBlockwise(x, { blocksize, code: c.code });
        const y = dequantizeBlockwise(q.codes, q) as Float32Array;
        let abs = 0;
        let rel = 0;
        for (let i = 0; i < x.length; i++) {
          const d = Math.abs(y[i]! - x[i]!);
          abs += d;
          rel += d / Math.abs(x[i]! + 1e-8);
        }
        expect(abs / x.length).toBeLessThan(c.abs);
        expect(rel / x.length).toBeLessThan(c.rel);
      }
    });
  }

  it("round-trips odd lengths and 16-bit inputs, returning the input dtype", () => {
    const x = randn(1001, 9);
    const f16 = new Uint16Array(x.length).fill(0x3c00); // 1.0
    const q = quantizeBlockwise(f16, { dtype: "float16", blocksize: 256 });
    expect(q.absmax.length).toBe(4);
    const y = dequantizeBlockwise(q.codes, q);
    expect(y).toBeInstanceOf(Uint16Array);
    expect([...y].every((v) => v === 0x3c00)).toBe(true);
    const q2 = quantizeBlockwise(x, { blocksize: 128 });
    expect(q2.codes.length).toBe(1001);
  });

  it("rejects bad arguments with typed errors", () => {
    expect(() => quantizeBlockwise(new Float32Array(4), { blocksize: 32 })).toThrowError(/blocksize/);
    expect(() => quantizeBlockwise(new Float32Array(4), { code: new Float32Array(16) })).toThrowError(/code/);
    const q = quantizeBlockwise(new Float32Array(100), { blocksize: 64 });
    expect(() => dequantizeBlockwise(q.codes, { ...q, absmax: new Float32Array(1) })).toThrowError(/absmax/);
  });
});
