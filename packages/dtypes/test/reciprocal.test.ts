// cudaReciprocal: bitsandbytes' CUDA reciprocal (rcp.approx.ftz.f32) for 16-bit mantissas, IEEE elsewhere.

import { describe, expect, it } from "vitest";
import { cudaReciprocal } from "../src/index.js";
import { rcpCorrection } from "../src/reciprocal.js";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const fromBits = (b: number): number => ((u32[0] = b >>> 0), f32[0]!);
const toBits = (x: number): number => ((f32[0] = x), u32[0]!);

describe("cudaReciprocal", () => {
  it("reproduces reciprocals measured on an H100 (x bits → result bits)", () => {
    // From tooling/scripts/rcp-approx/measure.cu output: inputs whose approximate reciprocal is not IEEE's,
    // including a scaled (×2^5) and a negative one.
    const measured = [
      [0x3f80c000, 0x3f7e823c], [0x3f85c000, 0x3f74fe90], [0x3f9a2000, 0x3f549b4e], [0x3fb82000, 0x3f31f750],
      [0x3fd7a000, 0x3f17f7b1], [0x3fff0000, 0x3f008080], [0x422e6000, 0x3cbbeab7], [0xbfae6000, 0xbf3beab7],
    ];
    for (const [x, r] of measured) {
      expect(toBits(cudaReciprocal(fromBits(x!))).toString(16)).toBe(r!.toString(16));
      expect(toBits(Math.fround(1 / fromBits(x!)))).not.toBe(r); // IEEE differs here
    }
  });

  it("stays within one ulp of the exact reciprocal for every 16-bit mantissa", () => {
    let corrected = 0;
    for (let k = 0; k < 1024; k++) {
      const x = fromBits(0x3f800000 | (k << 13));
      const r = cudaReciprocal(x);
      const ieee = Math.fround(1 / x);
      const ulp = Math.abs(fromBits(toBits(ieee) + 1) - ieee);
      expect(Math.abs(r - 1 / x)).toBeLessThan(ulp);
      expect(toBits(r) - toBits(ieee)).toBe(rcpCorrection(k));
      if (r !== ieee) corrected++;
    }
    expect(corrected).toBe(130);
  });

  it("is IEEE for full float32 mantissas and flushes subnormals like -ftz", () => {
    const x = fromBits(0x3f80c001);
    expect(cudaReciprocal(x)).toBe(Math.fround(1 / x));
    expect(cudaReciprocal(0)).toBe(Infinity);
    expect(cudaReciprocal(-0)).toBe(-Infinity);
    expect(cudaReciprocal(fromBits(0x00000001))).toBe(Infinity); // subnormal input → treated as 0
    expect(Object.is(cudaReciprocal(-3.4028234663852886e38), -0)).toBe(true); // subnormal result → −0
    expect(cudaReciprocal(Infinity)).toBe(0);
    expect(cudaReciprocal(NaN)).toBeNaN();
    expect(cudaReciprocal(2)).toBe(0.5);
  });
});
