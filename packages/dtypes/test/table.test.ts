// The dtype table: ids are dense and stable, names and interchange codes map both ways.

import { describe, expect, it } from "vitest";
import { DTYPES, DTYPE_NAMES, DTypeError, STORAGE_ARRAY, byteSize, dtypeFromId, dtypeFromSafetensors, dtypeFromTorch, dtypeInfo } from "../src/index.js";

describe("dtype table", () => {
  it("has dense, stable ids (a contract with the native addon)", () => {
    expect(DTYPE_NAMES.map((n) => [n, DTYPES[n].id])).toEqual([
      ["float32", 0], ["float16", 1], ["bfloat16", 2], ["float8_e4m3fn", 3], ["float8_e5m2", 4], ["int8", 5], ["uint8", 6],
      ["int16", 7], ["int32", 8], ["int64", 9], ["bool", 10], ["nf4", 11], ["fp4", 12],
    ]);
    for (const n of DTYPE_NAMES) expect(dtypeFromId(DTYPES[n].id)).toBe(n);
  });

  it("derives sizes and storage arrays consistently", () => {
    for (const n of DTYPE_NAMES) {
      const info = DTYPES[n];
      expect(info.bytes * 8).toBe(info.bits);
      if (info.bits >= 8) expect(STORAGE_ARRAY[n].BYTES_PER_ELEMENT).toBe(info.bytes);
    }
    expect(byteSize("nf4", 7)).toBe(4);
    expect(byteSize("bfloat16", 7)).toBe(14);
  });

  it("maps safetensors and torch names", () => {
    const st = { F32: "float32", F16: "float16", BF16: "bfloat16", F8_E4M3: "float8_e4m3fn", F8_E5M2: "float8_e5m2", I8: "int8", U8: "uint8", I16: "int16", I32: "int32", I64: "int64", BOOL: "bool" };
    for (const [code, name] of Object.entries(st)) expect(dtypeFromSafetensors(code)).toBe(name);
    expect(dtypeFromTorch("torch.bfloat16")).toBe("bfloat16");
    expect(dtypeFromTorch("float8_e5m2")).toBe("float8_e5m2");
  });

  it("names the argument on unknown dtypes", () => {
    expect(() => dtypeInfo("float64", "outDtype")).toThrowError(DTypeError);
    expect(() => dtypeInfo("float64", "outDtype")).toThrowError(/outDtype but received "float64"/);
    expect(() => dtypeFromSafetensors("F64")).toThrowError(/F64/);
    expect(() => dtypeFromId(13)).toThrowError(DTypeError);
  });
});
