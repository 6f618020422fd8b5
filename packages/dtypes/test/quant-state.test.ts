// QuantState serialization: state-dict keys, the packed JSON (Python float formatting) and loading rules.

import { describe, expect, it } from "vitest";
import { QuantState, QuantStateError, dequantize4bit, pyFloatRepr, quantize4bit, type StateTensor } from "../src/index.js";
import { randn } from "./helpers/random.js";

describe("pyFloatRepr", () => {
  it("formats like Python's repr", () => {
    const cases: [number, string][] = [
      [0.04926653578877449, "0.04926653578877449"],
      [1e-5, "1e-05"],
      [1.5e-5, "1.5e-05"],
      [0.0001, "0.0001"],
      [123, "123.0"],
      [1e16, "1e+16"],
      [1e15, "1000000000000000.0"],
      [6, "6.0"],
      [0, "0.0"],
      [-0, "-0.0"],
      [1.2345678901234567e-7, "1.2345678901234566e-07"],
      [3.4028234663852886e38, "3.4028234663852886e+38"],
      [-2.5, "-2.5"],
      [12345.678, "12345.678"],
      [Infinity, "Infinity"],
      [NaN, "NaN"],
    ];
    for (const [x, s] of cases) expect(pyFloatRepr(x)).toBe(s);
  });
});

describe("QuantState", () => {
  it("writes the non-nested JSON with the four keys", () => {
    const { state } = quantize4bit(randn(300 * 400, 1), { shape: [300, 400], quantType: "fp4" });
    expect(state.toJSONString()).toBe('{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [300, 400]}');
    expect(Object.keys(state.toStateDict("layer.weight"))).toEqual(["layer.weight.absmax", "layer.weight.quant_map", "layer.weight.quant_state.bitsandbytes__fp4"]);
    expect([...(state.toStateDict("w")["w.quant_map"]!.data as Float32Array)].map((v) => Object.is(v, -0))).not.toContain(true);
  });

  it("round-trips through toStateDict / fromStateDict (nested and plain)", () => {
    for (const compressStatistics of [false, true]) {
      const x = randn(64 * 33, 2);
      const { packed, state } = quantize4bit(x, { shape: [64, 33], compressStatistics });
      const dict = state.toStateDict("m.weight");
      const back = QuantState.fromStateDict("m.weight", dict);
      expect(back.toJSONString()).toBe(state.toJSONString());
      expect(dequantize4bit(packed, back)).toEqual(dequantize4bit(packed, state));
    }
  });

  it("rejects malformed states naming the key", () => {
    const { state } = quantize4bit(randn(256, 3), { compressStatistics: true });
    const dict = state.toStateDict("w");
    const withExtra: Record<string, StateTensor> = { ...dict, "w.quant_state.bitsandbytes__fp4": dict["w.quant_state.bitsandbytes__nf4"]! };
    expect(() => QuantState.fromStateDict("w", withExtra)).toThrowError(QuantStateError);
    const noJson = { ...dict };
    delete noJson["w.quant_state.bitsandbytes__nf4"];
    expect(() => QuantState.fromStateDict("w", noJson)).toThrowError(/quant_state/);
    const badAbsmax = { ...dict, "w.absmax": { dtype: "uint8", shape: [1], data: new Uint8Array(1) } as StateTensor };
    expect(() => QuantState.fromStateDict("w", badAbsmax)).toThrowError(/absmax/);
    const badJson = { ...dict, "w.quant_state.bitsandbytes__nf4": { dtype: "uint8", shape: [3], data: new TextEncoder().encode("{x") } as StateTensor };
    expect(() => QuantState.fromStateDict("w", badJson)).toThrowError(/JSON/);
  });

  it("warns when quant_map is not the canonical table", () => {
    const { state } = quantize4bit(randn(64, 4));
    const dict = state.toStateDict("w");
    dict["w.quant_map"] = { dtype: "float32", shape: [16], data: new Float32Array(16) };
    const warnings: string[] = [];
    QuantState.fromStateDict("w", dict, { onWarning: (m) => warnings.push(m) });
    expect(warnings).toHaveLength(1);
  });
});
