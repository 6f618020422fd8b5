// The disk offload folder (spec A13): byte layout and index.json text compared with what accelerate
// 1.15.0's offload_weight + save_offload_index wrote for the same tensors (recorded below as hex /
// text), round trips through the zero-copy loader, index merging, the safetensors-reference flavour,
// atomic writes, and typed errors for bad input.
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { ArgumentError, DTypeError } from "@lowbit/dtypes";
import { fromTypedArray, full, tensor, transpose, type Tensor } from "@lowbit/tensor";

import {
  OffloadError,
  OffloadedWeightsLoader,
  loadOffloadIndex,
  loadOffloadedWeight,
  offloadStateDict,
  offloadWeight,
  saveOffloadIndex,
  type OffloadIndex,
} from "../src/index.js";

// accelerate 1.15.0 (torch 2.13, numpy memmap) wrote these bytes for the tensors made in `pythonTensors`.
const PYTHON_DAT_HEX: Record<string, string> = {
  "model.layers.0.self_attn.q_proj.weight": "803f00c0003f504000bec842", // bf16 [[1, -2, 0.5], [3.25, -0.125, 100]]
  "a.b.c.d.e.f.weight": "003c0041fffb", // fp16 [1, 2.5, -65504]
  scale: "0000c03f", // fp32 0-d 1.5, stored as one element
  ids: "0100000000000000feffffffffffffff", // int64 [1, -2]
  mask: "010001", // bool [true, false, true]
  q: "807f00ff", // int8 [[-128, 127], [0, -1]]
  "emb.w\u00ebight": "07", // uint8 [7]
};

// ...and this index.json (json.dump(indent=2): ASCII escapes, no trailing newline).
const PYTHON_INDEX_JSON =
  '{\n  "model.layers.0.self_attn.q_proj.weight": {\n    "dtype": "bfloat16",\n    "shape": [\n      2,\n      3\n    ]\n  },\n  "a.b.c.d.e.f.weight": {\n    "dtype": "float16",\n    "shape": [\n      3\n    ]\n  },\n  "scale": {\n    "dtype": "float32",\n    "shape": []\n  },\n  "ids": {\n    "dtype": "int64",\n    "shape": [\n      2\n    ]\n  },\n  "mask": {\n    "dtype": "bool",\n    "shape": [\n      3\n    ]\n  },\n  "q": {\n    "dtype": "int8",\n    "shape": [\n      2,\n      2\n    ]\n  },\n  "emb.w\\u00ebight": {\n    "dtype": "uint8",\n    "shape": [\n      1\n    ]\n  }\n}';

function pythonTensors(): Array<[string, Tensor]> {
  return [
    ["model.layers.0.self_attn.q_proj.weight", tensor([[1, -2, 0.5], [3.25, -0.125, 100]], { dtype: "bfloat16" })],
    ["a.b.c.d.e.f.weight", tensor([1, 2.5, -65504], { dtype: "float16" })],
    ["scale", full([], 1.5)],
    ["ids", tensor([1, -2], { dtype: "int64" })],
    ["mask", tensor([1, 0, 1], { dtype: "bool" })],
    ["q", tensor([[-128, 127], [0, -1]], { dtype: "int8" })],
    ["emb.w\u00ebight", tensor([7], { dtype: "uint8" })],
  ];
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "lowbit-offload-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("offload folder layout", () => {
  it("writes the same .dat bytes and index.json text as accelerate", () => {
    const tensors = pythonTensors();
    const index: OffloadIndex = new Map();
    for (const [name, t] of tensors) offloadWeight(t, name, dir, index);
    saveOffloadIndex(index, dir);
    for (const [name, hex] of Object.entries(PYTHON_DAT_HEX)) {
      expect(readFileSync(join(dir, `${name}.dat`)).toString("hex"), name).toBe(hex);
    }
    expect(readFileSync(join(dir, "index.json"), "utf8")).toBe(PYTHON_INDEX_JSON);
    // Nothing but the tensors and the index: temporary files were renamed into place.
    expect(readdirSync(dir).sort()).toEqual([...Object.keys(PYTHON_DAT_HEX).map((n) => `${n}.dat`), "index.json"].sort());
    for (const [, t] of tensors) t.dispose();
  });

  it("reads a folder accelerate wrote (zero-copy) back into identical tensors", () => {
    for (const [name, hex] of Object.entries(PYTHON_DAT_HEX)) writeFileSync(join(dir, `${name}.dat`), Buffer.from(hex, "hex"));
    writeFileSync(join(dir, "index.json"), PYTHON_INDEX_JSON);
    const loader = new OffloadedWeightsLoader({ saveFolder: dir });
    expect(loader.keys()).toEqual(Object.keys(PYTHON_DAT_HEX));
    for (const [name, want] of pythonTensors()) {
      const got = loader.get(name);
      expect(got.dtype, name).toBe(want.dtype);
      expect(got.shape, name).toEqual(want.shape);
      expect(got.toArray(), name).toEqual(want.toArray());
      // Zero-copy: a .dat tensor views the read-only file mapping.
      expect(got.storage.readOnly, name).toBe(true);
      got.dispose();
      want.dispose();
    }
  });

  it("round-trips non-contiguous tensors as their row-major elements", () => {
    const base = fromTypedArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    const t = transpose(base, 0, 1); // (3, 2) view
    const index = offloadWeight(t, "t", dir);
    expect(index.get("t")).toEqual({ dtype: "float32", shape: [3, 2] });
    const back = loadOffloadedWeight(join(dir, "t.dat"), { dtype: "float32", shape: [3, 2] });
    expect(back.toArray()).toEqual([
      [1, 4],
      [2, 5],
      [3, 6],
    ]);
    for (const x of [base, t, back]) x.dispose();
  });

  it("writes raw bytes (e.g. from a mapped checkpoint) without a Tensor", () => {
    const index = offloadWeight({ data: new Uint16Array([0x3f80, 0xc000]), shape: [2], dtype: "bfloat16" }, "w", dir);
    expect(readFileSync(join(dir, "w.dat")).toString("hex")).toBe("803f00c0");
    expect(index.get("w")).toEqual({ dtype: "bfloat16", shape: [2] });
  });

  it("handles empty tensors", () => {
    const t = fromTypedArray(new Float32Array(0), [0, 4]);
    offloadWeight(t, "empty", dir);
    expect(readFileSync(join(dir, "empty.dat")).length).toBe(0);
    const back = loadOffloadedWeight(join(dir, "empty.dat"), { dtype: "float32", shape: [0, 4] });
    expect(back.shape).toEqual([0, 4]);
    t.dispose();
    back.dispose();
  });
});

describe("index.json", () => {
  it("merges into an existing index: existing keys first and updated in place, new keys appended", () => {
    saveOffloadIndex(new Map([["b", { dtype: "float16", shape: [1] }], ["a", { dtype: "int8", shape: [2] }]]), dir);
    saveOffloadIndex({ c: { dtype: "float32", shape: [] }, b: { dtype: "bfloat16", shape: [4, 4] } }, dir);
    expect([...loadOffloadIndex(dir)]).toEqual([
      ["b", { dtype: "bfloat16", shape: [4, 4] }],
      ["a", { dtype: "int8", shape: [2] }],
      ["c", { dtype: "float32", shape: [] }],
    ]);
  });

  it("writes nothing for an empty index", () => {
    saveOffloadIndex(new Map(), dir);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("keeps safetensors-reference entries as written", () => {
    saveOffloadIndex({ w: { safetensors_file: "/m/model.safetensors", weight_name: "w", dtype: "bfloat16" } }, dir);
    expect(readFileSync(join(dir, "index.json"), "utf8")).toBe(
      '{\n  "w": {\n    "safetensors_file": "/m/model.safetensors",\n    "weight_name": "w",\n    "dtype": "bfloat16"\n  }\n}',
    );
  });
});

describe("offloadStateDict and OffloadedWeightsLoader", () => {
  it("offloads a state dict and serves it back; in-RAM tensors win", () => {
    const sd = { "l.weight": tensor([[1, 2], [3, 4]], { dtype: "float16" }), "l.bias": tensor([5, 6]) };
    const folder = join(dir, "nested", "offload");
    offloadStateDict(folder, sd);
    const ram = tensor([9, 9]);
    const loader = new OffloadedWeightsLoader({ stateDict: { "l.bias": ram }, saveFolder: folder });
    expect(loader.keys()).toEqual(["l.bias", "l.weight"]);
    expect(loader.size).toBe(2);
    const w = loader.get("l.weight");
    const b = loader.get("l.bias");
    expect(w.toArray()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(b.toArray()).toEqual([9, 9]);
    // get() returns a tensor the caller owns: disposing it leaves the state dict's tensor alive.
    b.dispose();
    expect(ram.disposed).toBe(false);
    for (const t of [w, ram, sd["l.weight"], sd["l.bias"]]) t.dispose();
  });

  it("reads safetensors-reference entries and casts them to the entry's dtype", () => {
    // A hand-written safetensors file: 8-byte header length, JSON header, then the data.
    const header = JSON.stringify({ __metadata__: { format: "pt" }, w: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, i: { dtype: "I32", shape: [1], data_offsets: [8, 12] } });
    const padded = header + " ".repeat((8 - (header.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(padded.length));
    const data = Buffer.alloc(12);
    data.writeFloatLE(1.5, 0);
    data.writeFloatLE(-2, 4);
    data.writeInt32LE(7, 8);
    const file = join(dir, "model.safetensors");
    writeFileSync(file, Buffer.concat([len, Buffer.from(padded), data]));
    const loader = new OffloadedWeightsLoader({
      index: {
        "model.w": { safetensors_file: file, weight_name: "w", dtype: "bfloat16" },
        i: { safetensors_file: file },
      },
    });
    const w = loader.get("model.w");
    expect(w.dtype).toBe("bfloat16");
    expect(w.toArray()).toEqual([1.5, -2]);
    const i = loader.get("i");
    expect(i.dtype).toBe("int32");
    expect(i.toArray()).toEqual([7]);
    w.dispose();
    i.dispose();
    // A misaligned data section is copied out instead of viewed.
    const odd = join(dir, "odd.safetensors");
    const h2 = JSON.stringify({ x: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }) + " ";
    const l2 = Buffer.alloc(8);
    l2.writeBigUInt64LE(BigInt(h2.length));
    const d2 = Buffer.alloc(4);
    d2.writeFloatLE(3.25, 0);
    writeFileSync(odd, Buffer.concat([l2, Buffer.from(h2), d2]));
    expect((8 + h2.length) % 4).not.toBe(0);
    const x = new OffloadedWeightsLoader({ index: { x: { safetensors_file: odd } } }).get("x");
    expect(x.toArray()).toEqual([3.25]);
    x.dispose();
  });
});

describe("offload errors", () => {
  it("rejects names that are not file names", () => {
    const t = tensor([1]);
    expect(() => offloadWeight(t, "a/b", dir)).toThrow(ArgumentError);
    expect(() => offloadWeight(t, "..", dir)).toThrow("Expected a tensor name usable as a file name (no \"/\", \"\\\" or NUL) for offloadWeight's weightName but received \"..\" (string)");
    t.dispose();
  });

  it("rejects dtypes numpy cannot name", () => {
    const t = tensor([1], { dtype: "float8_e4m3fn" });
    expect(() => offloadWeight(t, "f8", dir)).toThrow(DTypeError);
    t.dispose();
    expect(() => offloadWeight({ data: new Uint8Array(1), shape: [2], dtype: "nf4" }, "n", dir)).toThrow(DTypeError);
  });

  it("rejects raw data of the wrong length, and non-weights", () => {
    expect(() => offloadWeight({ data: new Float32Array(3), shape: [2], dtype: "float32" }, "w", dir)).toThrow("Expected 8 bytes (2 × float32) for offloadWeight(\"w\")'s data but received 12");
    expect(() => offloadWeight(42 as unknown as Tensor, "w", dir)).toThrow(ArgumentError);
  });

  it("fails with OffloadError naming the file when it cannot be written", () => {
    const t = tensor([1]);
    expect(() => offloadWeight(t, "w", join(dir, "missing"))).toThrow(OffloadError);
    t.dispose();
  });

  it("refuses a .dat file whose size contradicts index.json", () => {
    writeFileSync(join(dir, "w.dat"), Buffer.alloc(6));
    const err = (() => {
      try {
        loadOffloadedWeight(join(dir, "w.dat"), { dtype: "float32", shape: [2] });
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(OffloadError);
    expect((err as OffloadError).message).toBe(`${join(dir, "w.dat")} holds 6 bytes but index.json describes float32 [2] = 8 bytes`);
    expect((err as OffloadError).code).toBe("ERR_FILE");
  });

  it("refuses dtypes lowbit cannot hold (float64) and malformed entries", () => {
    writeFileSync(join(dir, "d.dat"), Buffer.alloc(8));
    expect(() => loadOffloadedWeight(join(dir, "d.dat"), { dtype: "float64", shape: [1] })).toThrow(OffloadError);
    expect(() => loadOffloadedWeight(join(dir, "d.dat"), { dtype: "float32", shape: [-1] } as never)).toThrow(OffloadError);
    expect(() => loadOffloadedWeight(join(dir, "missing.dat"), { dtype: "float32", shape: [1] })).toThrow(OffloadError);
  });

  it("names the tensor when a loader entry is broken, and rejects unknown keys", () => {
    saveOffloadIndex({ w: { dtype: "float32", shape: [4] } }, dir);
    writeFileSync(join(dir, "w.dat"), Buffer.alloc(4));
    const loader = new OffloadedWeightsLoader({ saveFolder: dir });
    let err: unknown = null;
    try {
      loader.get("w");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OffloadError);
    expect((err as OffloadError).tensorName).toBe("w");
    expect(() => loader.get("nope")).toThrow(ArgumentError);
    expect(() => new OffloadedWeightsLoader({})).toThrow(ArgumentError);
  });

  it("refuses an index.json that is not a JSON object", () => {
    writeFileSync(join(dir, "index.json"), "[1, 2]");
    expect(() => loadOffloadIndex(dir)).toThrow(OffloadError);
    writeFileSync(join(dir, "index.json"), "{not json");
    expect(() => saveOffloadIndex({ a: { dtype: "int8", shape: [1] } }, dir)).toThrow(OffloadError);
  });
});
