// Tests for the safetensors header parser, reader, writer and shard index, against the repository's checkpoints
// and a file written by safetensors' own serializer (test/fixtures/writer-reference.safetensors).

import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  findCheckpointFiles,
  parseSafetensorsHeader,
  readSafetensors,
  readSafetensorsHeader,
  readShardIndex,
  SafetensorsError,
  serializeSafetensors,
  writeSafetensors,
} from "../src/index.js";
import { localFixture, repoFixture, withTempDir } from "./helpers.js";

/** Builds a file: u64 length (or `lengthOverride`), the header text, then `dataLength` bytes of data. */
function build(header: string | object, dataLength: number, lengthOverride?: bigint): Uint8Array {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.length + dataLength);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

const parse = (bytes: Uint8Array, fileSize = bytes.length) => parseSafetensorsHeader(bytes, fileSize, "t.safetensors");

/** Runs `fn`, expects a SafetensorsError, returns its message. */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    expect((e as SafetensorsError).code).toBe("ERR_FILE");
    return (e as Error).message;
  }
  throw new Error("expected a SafetensorsError, nothing was thrown");
}

const t = (dtype: string, shape: unknown, data_offsets: unknown) => ({ dtype, shape, data_offsets });

describe("parseSafetensorsHeader on real checkpoints", () => {
  it("reads tiny-llama's bf16 checkpoint: names, dtypes, shapes, offsets covering the data region", () => {
    const h = readSafetensorsHeader(repoFixture("tiny-llama/model.safetensors"));
    expect(h.metadata).toEqual({ format: "pt" });
    expect(h.tensors.size).toBe(21);
    expect(h.dataOffset).toBe(8 + h.headerLength);
    expect(h.headerLength % 8).toBe(0);
    const q = h.tensors.get("model.layers.1.self_attn.q_proj.weight");
    expect(q?.dtype).toBe("bfloat16");
    expect(q?.safetensorsDtype).toBe("BF16");
    expect(q?.shape).toEqual([128, 128]);
    expect(h.tensors.get("model.layers.0.self_attn.k_proj.weight")?.shape).toEqual([64, 128]);
    expect(h.tensors.get("model.layers.0.mlp.down_proj.weight")?.shape).toEqual([128, 344]);
    expect(h.tensors.get("lm_head.weight")?.shape).toEqual([1000, 128]);
    let cursor = h.dataOffset;
    for (const info of h.tensors.values()) {
      expect(info.byteOffset).toBe(cursor);
      cursor += info.byteLength;
    }
    expect(cursor).toBe(readFileSync(repoFixture("tiny-llama/model.safetensors")).length);
  });

  it("reads the pre-quantized NF4 and int8 checkpoints (U8 / I8 / F16 / F32)", () => {
    const nf4 = readSafetensorsHeader(repoFixture("tiny-llama-bnb-nf4/model.safetensors"));
    expect(nf4.tensors.get("model.layers.0.self_attn.q_proj.weight")?.dtype).toBe("uint8");
    expect(nf4.tensors.get("model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4")?.dtype).toBe("uint8");
    const int8 = readSafetensorsHeader(repoFixture("tiny-llama-bnb-int8/model.safetensors"));
    expect(int8.tensors.get("model.layers.0.mlp.down_proj.weight")?.dtype).toBe("int8");
    expect(int8.tensors.get("model.layers.0.mlp.down_proj.SCB")?.shape).toEqual([128]);
  });

  it("rejects a dtype lowbit cannot hold unless allowForeignDtypes, then lists it separately", () => {
    const path = repoFixture("tiny-llama-lora/adapter_model.safetensors");
    expect(errorOf(() => readSafetensorsHeader(path))).toMatch(/tensor ".*lora_A\.weight": dtype F64 has no lowbit equivalent/);
    const h = readSafetensorsHeader(path, { allowForeignDtypes: true });
    expect(h.tensors.size).toBe(0);
    expect(h.foreignTensors.size).toBe(12);
    const a = h.foreignTensors.get("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
    expect(a).toMatchObject({ dtype: null, safetensorsDtype: "F64", shape: [8, 344], byteLength: 8 * 344 * 8 });
  });
});

describe("parseSafetensorsHeader accepts what the format allows", () => {
  it("accepts space padding, zero-size tensors (several at one offset), scalars and no metadata", () => {
    const header = JSON.stringify({
      a: t("F32", [2], [0, 8]),
      e1: t("F32", [0, 3], [8, 8]),
      e2: t("I64", [4, 0], [8, 8]),
      s: t("BF16", [], [8, 10]),
    });
    const h = parse(build(header + "      ", 10));
    expect([...h.tensors.keys()]).toEqual(["a", "e1", "e2", "s"]);
    expect(h.metadata).toBeNull();
    expect(h.tensors.get("s")).toMatchObject({ shape: [], byteOffset: 8 + header.length + 6 + 8, byteLength: 2 });
  });

  it("accepts an empty file body ({} header, no tensors) and extra bytes after the header in the buffer", () => {
    expect(parse(build("{}", 0)).tensors.size).toBe(0);
    const bytes = build({ a: t("U8", [3], [0, 3]) }, 3);
    expect(parseSafetensorsHeader(bytes, bytes.length, "t").tensors.get("a")?.byteLength).toBe(3);
  });
});

describe("parseSafetensorsHeader rejects malformed files with SafetensorsError naming file and tensor", () => {
  it("truncated file or buffer", () => {
    expect(errorOf(() => parse(new Uint8Array(5)))).toMatchInlineSnapshot(`"t.safetensors: truncated file: 5 bytes, fewer than the 8-byte header length"`);
    const ok = build({ a: t("U8", [3], [0, 3]) }, 3);
    expect(errorOf(() => parseSafetensorsHeader(ok.subarray(0, 20), ok.length, "t.safetensors"))).toMatchInlineSnapshot(
      `"t.safetensors: truncated buffer: the header needs 61 bytes but only 20 were given"`,
    );
    expect(errorOf(() => parse(ok.subarray(0, 40)))).toMatchInlineSnapshot(`"t.safetensors: header length 53 runs past the end of the file (40 bytes)"`);
  });

  it("absurd header length", () => {
    expect(errorOf(() => parse(build("{}", 0, 100_000_001n), 1 << 30))).toMatchInlineSnapshot(
      `"t.safetensors: header length 100000001 is larger than the 100000000-byte limit (corrupt or not a safetensors file)"`,
    );
    expect(errorOf(() => parse(build("{}", 0, 0xffffffffffffffffn)))).toMatch(/18446744073709551615 is larger than/);
  });

  it("bad UTF-8, not starting with '{', bad JSON, duplicate keys, non-object root", () => {
    const bad = build("{}", 0);
    const withBadByte = build('{"\u00ff":1}', 0);
    withBadByte[10] = 0xff;
    expect(errorOf(() => parse(withBadByte))).toMatchInlineSnapshot(`"t.safetensors: header is not valid UTF-8"`);
    expect(errorOf(() => parse(build(" {}", 0)))).toMatchInlineSnapshot(`"t.safetensors: header must start with '{' but starts with " {}""`);
    expect(errorOf(() => parse(build("[1]", 0)))).toMatch(/must start with '\{'/);
    expect(errorOf(() => parse(build('{"a":', 0)))).toMatchInlineSnapshot(`"t.safetensors: header is not valid JSON (unexpected end of input at position 5)"`);
    expect(errorOf(() => parse(build('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', 2)))).toMatchInlineSnapshot(
      `"t.safetensors, tensor "a": appears twice in the header (names must be unique)"`,
    );
    expect(errorOf(() => parse(build('{"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}}', 1)))).toMatch(/header is not valid JSON \(duplicate key "dtype" at position 19\)/);
    expect(errorOf(() => parse(build('{"a":1} x', 0)))).toMatch(/trailing characters/);
    expect(errorOf(() => parse(build('{"\\ud800":1}', 0)))).toMatch(/lone high surrogate/);
    expect(parse(bad).tensors.size).toBe(0);
  });

  it("non-object entries and bad metadata", () => {
    expect(errorOf(() => parse(build({ w: [1, 2] }, 0)))).toMatchInlineSnapshot(
      `"t.safetensors, tensor "w": entry must be an object {dtype, shape, data_offsets} but is [1, 2] (array)"`,
    );
    expect(errorOf(() => parse(build({ __metadata__: { format: 1 } }, 0)))).toMatchInlineSnapshot(
      `"t.safetensors: __metadata__["format"] must be a string but is 1 (number)"`,
    );
    expect(errorOf(() => parse(build({ __metadata__: "pt" }, 0)))).toMatch(/__metadata__ must be an object of strings/);
  });

  it("unknown or missing dtype", () => {
    expect(errorOf(() => parse(build({ w: t("F128", [1], [0, 16]) }, 16)))).toMatch(/^t\.safetensors, tensor "w": unknown dtype "F128" \(safetensors dtypes: BOOL, F4, /);
    expect(errorOf(() => parse(build({ w: { shape: [1], data_offsets: [0, 1] } }, 1)))).toMatchInlineSnapshot(
      `"t.safetensors, tensor "w": dtype must be a string but is nothing"`,
    );
  });

  it("shapes that are not arrays of non-negative integers", () => {
    for (const shape of ["[-1]", "[2.0]", '["3"]', "[1e3]", "3", "[9007199254740993]"]) {
      const msg = errorOf(() => parse(build(`{"w":{"dtype":"U8","shape":${shape},"data_offsets":[0,3]}}`, 3)));
      expect(msg).toMatch(/^t\.safetensors, tensor "w": shape must be an array of non-negative integers but is /);
    }
  });

  it("data_offsets that are not [begin, end] integers", () => {
    for (const off of ["[0]", "[0,1,2]", "[-1,0]", "[0,1.5]", "null", "[0,1e1]"]) {
      const msg = errorOf(() => parse(build(`{"w":{"dtype":"U8","shape":[1],"data_offsets":${off}}}`, 1)));
      expect(msg).toMatch(/^t\.safetensors, tensor "w": data_offsets must be \[begin, end\] non-negative integers but is /);
    }
    expect(errorOf(() => parse(build({ w: t("U8", [0], [2, 1]) }, 2)))).toMatchInlineSnapshot(`"t.safetensors, tensor "w": data_offsets [2, 1] end before they begin"`);
  });

  it("byte length that disagrees with numel × itemsize, or sub-byte sizes that do not fill bytes", () => {
    expect(errorOf(() => parse(build({ w: t("F32", [2, 3], [0, 20]) }, 20)))).toMatchInlineSnapshot(
      `"t.safetensors, tensor "w": data_offsets [0, 20] hold 20 bytes but shape [2, 3] of F32 needs 24"`,
    );
    const f4 = build({ w: t("F4", [3], [0, 2]) }, 2);
    expect(errorOf(() => parseSafetensorsHeader(f4, f4.length, "t", { allowForeignDtypes: true }))).toMatch(/shape \[3\] of F4 does not fill a whole number of bytes/);
  });

  it("offsets past the data region", () => {
    expect(errorOf(() => parse(build({ w: t("U8", [4], [0, 4]) }, 3)))).toMatchInlineSnapshot(
      `"t.safetensors, tensor "w": data_offsets [0, 4] run past the data region (3 bytes after the 53-byte header)"`,
    );
  });

  it("overlapping tensors, gaps, and uncovered bytes at the end", () => {
    const overlap = { a: t("U8", [4], [0, 4]), b: t("U8", [4], [2, 6]) };
    expect(errorOf(() => parse(build(overlap, 6)))).toMatchInlineSnapshot(
      `"t.safetensors, tensor "b": data_offsets [2, 6] overlap tensor "a", which ends at 4"`,
    );
    const same = { a: t("U8", [4], [0, 4]), b: t("U8", [4], [0, 4]) };
    expect(errorOf(() => parse(build(same, 4)))).toMatch(/overlap tensor/);
    const gap = { a: t("U8", [2], [0, 2]), b: t("U8", [2], [3, 5]) };
    expect(errorOf(() => parse(build(gap, 5)))).toMatchInlineSnapshot(
      `"t.safetensors, tensor "b": data_offsets [3, 5] leave a gap of 1 bytes after tensor "a" (the data region must be fully covered)"`,
    );
    expect(errorOf(() => parse(build({ b: t("U8", [2], [1, 3]) }, 3)))).toMatch(/gap of 1 bytes after the start of the data region/);
    expect(errorOf(() => parse(build({ a: t("U8", [2], [0, 2]) }, 5)))).toMatchInlineSnapshot(
      `"t.safetensors: the tensors cover 2 of the 5 data bytes (the data region must be fully covered, with nothing after it)"`,
    );
  });

  it("bad file size argument", () => {
    expect(errorOf(() => parseSafetensorsHeader(new Uint8Array(16), -1, "t"))).toMatch(/expected a non-negative integer file size but received -1 \(number\)/);
  });

  it("readSafetensorsHeader names unreadable paths", () => {
    expect(errorOf(() => readSafetensorsHeader("/nonexistent/x.safetensors"))).toMatch(/^\/nonexistent\/x\.safetensors: cannot be read/);
    expect(errorOf(() => readSafetensorsHeader(repoFixture("tiny-llama")))).toMatch(/is not a regular file/);
  });
});

describe("writeSafetensors", () => {
  it("writes byte-for-byte what safetensors' serializer wrote (dtype-then-name order, padding, metadata)", () => {
    const ref = localFixture("writer-reference.safetensors");
    const { header, tensors } = readSafetensors(ref);
    const input = Object.fromEntries([...tensors].map(([n, x]) => [n, { dtype: x.dtype, shape: x.shape, data: x.bytes }]));
    expect(Buffer.from(serializeSafetensors(input, header.metadata ?? undefined)).equals(readFileSync(ref))).toBe(true);
  });

  it("round-trips tiny-llama's checkpoint to identical bytes, atomically, leaving no temporary file", () => {
    const src = repoFixture("tiny-llama/model.safetensors");
    const { header, tensors } = readSafetensors(src);
    withTempDir((dir) => {
      const out = join(dir, "model.safetensors");
      writeFileSync(out, "old contents");
      const input = Object.fromEntries([...tensors].map(([n, x]) => [n, { dtype: x.dtype, shape: x.shape, data: x.bytes }]));
      writeSafetensors(out, input, header.metadata ?? undefined);
      expect(readFileSync(out).equals(readFileSync(src))).toBe(true);
      expect(readdirSync(dir)).toEqual(["model.safetensors"]);
    });
  });

  it("accepts typed arrays of any kind and reads them back", () => {
    withTempDir((dir) => {
      const out = join(dir, "x.safetensors");
      const w = new Float32Array([1.5, -2, 3.25, 0]);
      const bf = new Uint16Array([0x3f80, 0xc000]);
      writeSafetensors(out, { w: { dtype: "float32", shape: [2, 2], data: w }, b: { dtype: "bfloat16", shape: [2], data: bf } }, { format: "pt" });
      const back = readSafetensors(out);
      expect(back.header.metadata).toEqual({ format: "pt" });
      const wb = back.tensors.get("w");
      expect(wb?.shape).toEqual([2, 2]);
      expect(Array.from(new Float32Array(wb?.bytes.buffer as ArrayBuffer))).toEqual([1.5, -2, 3.25, 0]);
      expect(Array.from(new Uint16Array(back.tensors.get("b")?.bytes.buffer as ArrayBuffer))).toEqual([0x3f80, 0xc000]);
    });
  });

  it("rejects bad input without touching the target", () => {
    withTempDir((dir) => {
      const out = join(dir, "x.safetensors");
      const u8 = new Uint8Array(4);
      expect(errorOf(() => writeSafetensors(out, { q: { dtype: "nf4", shape: [8], data: u8 } }))).toMatchInlineSnapshot(
        `"writeSafetensors, tensor "q": dtype nf4 has no safetensors name (4-bit codes are stored as uint8 with a quant_state)"`,
      );
      expect(errorOf(() => writeSafetensors(out, { w: { dtype: "float32", shape: [2], data: u8 } }))).toMatchInlineSnapshot(
        `"writeSafetensors, tensor "w": shape [2] of float32 needs 8 bytes but data has 4"`,
      );
      expect(errorOf(() => writeSafetensors(out, { w: { dtype: "float32", shape: [-1], data: u8 } }))).toMatch(/non-negative integers but received Array\(1\)/);
      expect(errorOf(() => writeSafetensors(out, { w: { dtype: "f32" as never, shape: [1], data: u8 } }))).toMatch(/expected a lowbit dtype but received "f32"/);
      expect(errorOf(() => writeSafetensors(out, { __metadata__: { dtype: "uint8", shape: [4], data: u8 } }))).toMatch(/reserved/);
      expect(errorOf(() => writeSafetensors(out, {}, { n: 1 as never }))).toMatch(/metadata\["n"\] to be a string/);
      expect(existsSync(out)).toBe(false);
      expect(errorOf(() => writeSafetensors(join(dir, "missing-dir", "x.safetensors"), {}))).toMatch(/could not be written/);
      expect(readdirSync(dir)).toEqual([]);
    });
  });
});

describe("readShardIndex and findCheckpointFiles", () => {
  const tiny = { w: { dtype: "uint8" as const, shape: [1], data: new Uint8Array(1) } };

  function makeSharded(dir: string, weightMap: Record<string, string>, files: string[]): void {
    for (const f of files) writeSafetensors(join(dir, f), tiny, { format: "pt" });
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 2 }, weight_map: weightMap }, null, 2));
  }

  it("reads an index, with shards sorted and de-duplicated", () => {
    withTempDir((dir) => {
      const a = "model-00001-of-00002.safetensors";
      const b = "model-00002-of-00002.safetensors";
      makeSharded(dir, { "lm_head.weight": b, "model.embed_tokens.weight": a, "model.norm.weight": b }, [a, b]);
      const idx = readShardIndex(dir);
      expect(idx.shards).toEqual([a, b]);
      expect(idx.shardPaths).toEqual([join(dir, a), join(dir, b)]);
      expect(idx.weightMap.get("lm_head.weight")).toBe(b);
      expect(idx.metadata).toEqual({ total_size: 2 });
      const found = findCheckpointFiles(dir);
      expect(found.kind).toBe("sharded");
      expect(found.files).toEqual(idx.shardPaths);
    });
  });

  it("rejects shard names that leave the folder, and names a missing shard", () => {
    withTempDir((dir) => {
      mkdirSync(join(dir, "sub"));
      const cases: [string, RegExp][] = [
        ["../evil.safetensors", /has an empty, '\.' or '\.\.' path segment/],
        ["sub/../../evil.safetensors", /'\.\.' path segment/],
        ["/etc/passwd", /is an absolute path/],
        ["C:/x.safetensors", /is an absolute path/],
        ["sub\\x.safetensors", /contains a backslash/],
        ["sub//x.safetensors", /empty, '\.' or '\.\.' path segment/],
        ["", /is empty/],
      ];
      for (const [name, re] of cases) {
        writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { "a.weight": name } }));
        expect(errorOf(() => readShardIndex(dir))).toMatch(re);
      }
      makeSharded(dir, { "a.weight": "sub/model-1.safetensors" }, ["sub/model-1.safetensors"]);
      expect(readShardIndex(dir).shardPaths).toEqual([join(dir, "sub", "model-1.safetensors")]);
      makeSharded(dir, { "a.weight": "model-1.safetensors", "b.weight": "model-2.safetensors", "c.weight": "model-2.safetensors" }, ["model-1.safetensors"]);
      expect(errorOf(() => readShardIndex(dir))).toBe(
        `${join(dir, "model.safetensors.index.json")}: shard "model-2.safetensors" is missing from ${dir} (it holds 2 tensor(s), e.g. "b.weight")`,
      );
    });
  });

  it("rejects malformed index files", () => {
    withTempDir((dir) => {
      const p = join(dir, "model.safetensors.index.json");
      writeFileSync(p, "{not json");
      expect(errorOf(() => readShardIndex(dir))).toMatch(/is not valid JSON/);
      writeFileSync(p, JSON.stringify({ metadata: {} }));
      expect(errorOf(() => readShardIndex(dir))).toMatch(/weight_map must be an object of tensor name → shard file but is nothing/);
      writeFileSync(p, JSON.stringify({ weight_map: { "a.weight": 3 } }));
      expect(errorOf(() => readShardIndex(dir))).toMatch(/tensor "a\.weight": weight_map value must be a shard file name but is 3 \(number\)/);
      expect(errorOf(() => readShardIndex(join(dir, "nope")))).toMatch(/cannot be read/);
    });
  });

  it("follows transformers' file precedence and refuses pickle-only folders with a fix", () => {
    withTempDir((dir) => {
      expect(errorOf(() => findCheckpointFiles(dir))).toMatch(/has no model\.safetensors or model\.safetensors\.index\.json$/);
      writeFileSync(join(dir, "pytorch_model.bin"), "");
      expect(errorOf(() => findCheckpointFiles(dir))).toMatch(/has only PyTorch pickle weights \(pytorch_model\.bin\).*safe_serialization=True/);
      writeSafetensors(join(dir, "model.fp16.safetensors"), tiny);
      expect(findCheckpointFiles(dir, { variant: "fp16" })).toEqual({ kind: "single", files: [join(dir, "model.fp16.safetensors")] });
      writeSafetensors(join(dir, "model.safetensors"), tiny);
      expect(findCheckpointFiles(dir)).toEqual({ kind: "single", files: [join(dir, "model.safetensors")] });
      expect(errorOf(() => findCheckpointFiles(dir, { variant: "../x" }))).toMatch(/expected variant to be a name/);
    });
  });
});
