// safetensors: a strict header parser, a whole-file reader, an atomic writer, and the sharded-checkpoint index.
// Follows the format as huggingface/safetensors (Rust crate, v0.8) defines and validates it:
//   [u64 little-endian N][N bytes of UTF-8 JSON header, may be padded with spaces][data region]
//   header = { "__metadata__"?: {string: string}, name: {dtype, shape, data_offsets: [begin, end]}, ... }
// Rules enforced here (the Rust crate's `read_metadata` / `Metadata::validate`, plus the README's "MUST"s):
// N ≤ 100 MB; the header starts with '{' and is valid UTF-8 JSON with no duplicate keys; offsets are relative to
// the data region; sorted by offset, the tensors cover the data region exactly, with no gap and no overlap
// (zero-size tensors take no bytes); end - begin = numel × itemsize; the data region ends at the end of the file.
// This module does not read tensor data lazily or map files; the model loader reads the ranges it needs.

import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { isAbsolute, join, posix, relative, resolve } from "node:path";
import { DTYPES, describe, dtypeFromSafetensors, isDType, type DType } from "@lowbit/dtypes";
import { writeAll, writeFileAtomic } from "@lowbit/kernels";
import { SafetensorsError } from "./errors.js";
import { describeStrictJson, isStrictJsonObject, parseStrictJson, StrictJsonError, StrictJsonNumber, type StrictJsonValue } from "./strict-json.js";

/** Largest header the Rust crate accepts (`MAX_HEADER_SIZE`). */
export const SAFETENSORS_MAX_HEADER_SIZE = 100_000_000;

/**
 * Every dtype the safetensors format defines, in the Rust crate's `Dtype` declaration order (which its serializer
 * sorts by, largest first), with its size in bits.
 */
export const SAFETENSORS_DTYPE_BITS = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
} as const;
export type SafetensorsFormatDType = keyof typeof SAFETENSORS_DTYPE_BITS;
const FORMAT_DTYPE_ORDER = Object.keys(SAFETENSORS_DTYPE_BITS) as SafetensorsFormatDType[];

function isFormatDType(s: string): s is SafetensorsFormatDType {
  return Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPE_BITS, s);
}

/** One tensor of a safetensors file whose dtype lowbit can hold. */
export interface SafetensorsTensorInfo {
  readonly name: string;
  /** lowbit dtype (`dtypeFromSafetensors` of `safetensorsDtype`). */
  readonly dtype: DType;
  /** The dtype string as written in the file ("BF16"). */
  readonly safetensorsDtype: SafetensorsFormatDType;
  readonly shape: readonly number[];
  /** Absolute offset of the first byte in the file (data region start + data_offsets[0]). */
  readonly byteOffset: number;
  readonly byteLength: number;
}

/** A tensor whose dtype the format allows but lowbit has no dtype for (F64, U16, U32, U64, C64, F8_E8M0, F4, F6_*). */
export interface SafetensorsForeignTensorInfo extends Omit<SafetensorsTensorInfo, "dtype"> {
  readonly dtype: null;
}

export interface SafetensorsHeader {
  readonly fileName: string;
  /** N, the JSON header's byte length including any space padding. */
  readonly headerLength: number;
  /** 8 + N: where the data region starts. */
  readonly dataOffset: number;
  readonly dataLength: number;
  /** `__metadata__`, or null when the file has none. */
  readonly metadata: Readonly<Record<string, string>> | null;
  /** Tensors in file order (ascending offset). */
  readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>;
  /** Tensors with dtypes lowbit cannot hold; empty unless `allowForeignDtypes` was set. */
  readonly foreignTensors: ReadonlyMap<string, SafetensorsForeignTensorInfo>;
}

export interface ParseSafetensorsOptions {
  /**
   * Accept tensors whose dtype is valid in the format but absent from lowbit's dtype table (e.g. F64 in a PEFT
   * adapter saved from a float64 model). They are validated like the others and listed in `foreignTensors`;
   * without this option such a tensor is an error that names it.
   */
  readonly allowForeignDtypes?: boolean;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function checkFileSize(fileSize: number, fileName: string): void {
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw new SafetensorsError(fileName, `expected a non-negative integer file size but received ${describe(fileSize)}`);
  }
}

/** Reads the little-endian u64 header length from the first 8 bytes and checks it against the limits. */
function readHeaderLength(bytes: Uint8Array, fileSize: number, fileName: string): number {
  if (fileSize < 8) throw new SafetensorsError(fileName, `truncated file: ${fileSize} bytes, fewer than the 8-byte header length`);
  if (bytes.length < 8) throw new SafetensorsError(fileName, `truncated buffer: ${bytes.length} bytes, fewer than the 8-byte header length`);
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(SAFETENSORS_MAX_HEADER_SIZE)) {
    throw new SafetensorsError(fileName, `header length ${n} is larger than the ${SAFETENSORS_MAX_HEADER_SIZE}-byte limit (corrupt or not a safetensors file)`);
  }
  const headerLength = Number(n);
  if (8 + headerLength > fileSize) {
    throw new SafetensorsError(fileName, `header length ${headerLength} runs past the end of the file (${fileSize} bytes)`);
  }
  return headerLength;
}

/** Product of `shape` as an exact integer, or null when it exceeds 2^53 (no real file gets there). */
function numelOf(shape: readonly number[]): number | null {
  let n = 1n;
  for (const d of shape) {
    n *= BigInt(d);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  }
  return Number(n);
}

/**
 * Parses and validates a safetensors header.
 * @param bytes at least the first 8 + N bytes of the file (more is fine)
 * @param fileSize the whole file's size in bytes (the data region must end exactly there)
 * @param fileName used in error messages
 * @throws SafetensorsError for every malformed or inconsistent header, naming the file and the tensor
 */
export function parseSafetensorsHeader(
  bytes: Uint8Array,
  fileSize: number,
  fileName: string,
  options: ParseSafetensorsOptions = {},
): SafetensorsHeader {
  checkFileSize(fileSize, fileName);
  const headerLength = readHeaderLength(bytes, fileSize, fileName);
  if (bytes.length < 8 + headerLength) {
    throw new SafetensorsError(fileName, `truncated buffer: the header needs ${8 + headerLength} bytes but only ${bytes.length} were given`);
  }
  const dataOffset = 8 + headerLength;
  const dataLength = fileSize - dataOffset;

  let text: string;
  try {
    text = utf8.decode(bytes.subarray(8, dataOffset));
  } catch (cause) {
    throw new SafetensorsError(fileName, "header is not valid UTF-8", { cause });
  }
  if (!text.startsWith("{")) throw new SafetensorsError(fileName, `header must start with '{' but starts with ${JSON.stringify(text.slice(0, 16))}`);
  let root: StrictJsonValue;
  try {
    root = parseStrictJson(text);
  } catch (cause) {
    if (cause instanceof StrictJsonError && cause.duplicate?.depth === 1) {
      const { key } = cause.duplicate;
      throw new SafetensorsError(fileName, `appears twice in the header (names must be unique)`, key === "__metadata__" ? { cause } : { tensor: key, cause });
    }
    const why = cause instanceof StrictJsonError ? cause.message : String(cause);
    throw new SafetensorsError(fileName, `header is not valid JSON (${why})`, { cause });
  }
  if (!isStrictJsonObject(root)) throw new SafetensorsError(fileName, "header must be a JSON object");

  let metadata: Record<string, string> | null = null;
  interface Entry {
    name: string;
    st: SafetensorsFormatDType;
    dtype: DType | null;
    shape: number[];
    begin: number;
    end: number;
  }
  const entries: Entry[] = [];
  for (const [name, value] of root) {
    if (name === "__metadata__") {
      if (!isStrictJsonObject(value)) throw new SafetensorsError(fileName, `__metadata__ must be an object of strings but is ${describeStrictJson(value)}`);
      metadata = Object.create(null) as Record<string, string>;
      for (const [k, v] of value) {
        if (typeof v !== "string") throw new SafetensorsError(fileName, `__metadata__[${JSON.stringify(k)}] must be a string but is ${describeStrictJson(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    const err = (message: string) => new SafetensorsError(fileName, message, { tensor: name });
    if (!isStrictJsonObject(value)) throw err(`entry must be an object {dtype, shape, data_offsets} but is ${describeStrictJson(value)}`);
    const dt = value.get("dtype");
    if (typeof dt !== "string") throw err(`dtype must be a string but is ${describeStrictJson(dt)}`);
    if (!isFormatDType(dt)) throw err(`unknown dtype ${JSON.stringify(dt)} (safetensors dtypes: ${FORMAT_DTYPE_ORDER.join(", ")})`);
    let dtype: DType | null = null;
    try {
      dtype = dtypeFromSafetensors(dt);
    } catch {
      if (options.allowForeignDtypes !== true) {
        throw err(`dtype ${dt} has no lowbit equivalent (pass allowForeignDtypes to list such tensors separately)`);
      }
    }
    const shapeV = value.get("shape");
    if (!Array.isArray(shapeV) || !shapeV.every((d) => d instanceof StrictJsonNumber && d.isUnsignedIntegerLiteral() && Number.isSafeInteger(d.value))) {
      throw err(`shape must be an array of non-negative integers but is ${describeStrictJson(shapeV)}`);
    }
    const shape = (shapeV as StrictJsonNumber[]).map((d) => d.value);
    const offV = value.get("data_offsets");
    if (
      !Array.isArray(offV) ||
      offV.length !== 2 ||
      !offV.every((d) => d instanceof StrictJsonNumber && d.isUnsignedIntegerLiteral() && Number.isSafeInteger(d.value))
    ) {
      throw err(`data_offsets must be [begin, end] non-negative integers but is ${describeStrictJson(offV)}`);
    }
    const begin = (offV[0] as StrictJsonNumber).value;
    const end = (offV[1] as StrictJsonNumber).value;
    if (end < begin) throw err(`data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLength) throw err(`data_offsets [${begin}, ${end}] run past the data region (${dataLength} bytes after the ${headerLength}-byte header)`);
    const numel = numelOf(shape);
    const bits = SAFETENSORS_DTYPE_BITS[dt];
    if (numel === null) throw err(`shape [${shape.join(", ")}] has more elements than can be addressed`);
    if ((numel * bits) % 8 !== 0) throw err(`shape [${shape.join(", ")}] of ${dt} does not fill a whole number of bytes`);
    const expectedBytes = (numel * bits) / 8;
    if (end - begin !== expectedBytes) {
      throw err(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape [${shape.join(", ")}] of ${dt} needs ${expectedBytes}`);
    }
    entries.push({ name, st: dt, dtype, shape, begin, end });
  }

  // Coverage: sorted by (begin, end), each tensor starts where the previous ended, and the last ends at EOF.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: string | null = null;
  for (const e of entries) {
    if (e.begin < cursor) {
      throw new SafetensorsError(fileName, `data_offsets [${e.begin}, ${e.end}] overlap tensor ${JSON.stringify(previous)}, which ends at ${cursor}`, { tensor: e.name });
    }
    if (e.begin > cursor) {
      const after = previous === null ? "the start of the data region" : `tensor ${JSON.stringify(previous)}`;
      throw new SafetensorsError(fileName, `data_offsets [${e.begin}, ${e.end}] leave a gap of ${e.begin - cursor} bytes after ${after} (the data region must be fully covered)`, { tensor: e.name });
    }
    cursor = e.end;
    previous = e.name;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError(fileName, `the tensors cover ${cursor} of the ${dataLength} data bytes (the data region must be fully covered, with nothing after it)`);
  }

  const tensors = new Map<string, SafetensorsTensorInfo>();
  const foreignTensors = new Map<string, SafetensorsForeignTensorInfo>();
  for (const e of entries) {
    const info = { name: e.name, safetensorsDtype: e.st, shape: e.shape, byteOffset: dataOffset + e.begin, byteLength: e.end - e.begin };
    if (e.dtype === null) foreignTensors.set(e.name, { ...info, dtype: null });
    else tensors.set(e.name, { ...info, dtype: e.dtype });
  }
  return { fileName, headerLength, dataOffset, dataLength, metadata, tensors, foreignTensors };
}

/** Reads exactly `length` bytes at `position`, or fewer at end of file. */
function readAt(fd: number, length: number, position: number): Uint8Array {
  const buf = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

function statFile(path: string): number {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new SafetensorsError(path, "is not a regular file");
    size = st.size;
  } catch (cause) {
    if (cause instanceof SafetensorsError) throw cause;
    throw new SafetensorsError(path, `cannot be read (${(cause as Error).message})`, { cause });
  }
  return size;
}

/** Reads and validates a safetensors file's header, reading only its first 8 + N bytes. */
export function readSafetensorsHeader(path: string, options: ParseSafetensorsOptions = {}): SafetensorsHeader {
  const fileSize = statFile(path);
  const fd = openSync(path, "r");
  try {
    const head = readAt(fd, 8, 0);
    const headerLength = readHeaderLength(head, fileSize, path);
    const bytes = readAt(fd, 8 + headerLength, 0);
    return parseSafetensorsHeader(bytes, fileSize, path, options);
  } finally {
    closeSync(fd);
  }
}

/** A tensor read into memory: raw little-endian bytes (16-bit floats as bits, bool as 0/1 bytes). */
export interface SafetensorsTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** A copy of the tensor's bytes, 8-byte aligned so any typed-array view of it is valid. */
  readonly bytes: Uint8Array;
}

/** Reads a whole safetensors file (header validated first). For tests, tools and small adapters. */
export function readSafetensors(path: string): { header: SafetensorsHeader; tensors: Map<string, SafetensorsTensor> } {
  const header = readSafetensorsHeader(path);
  const file = readFileSync(path);
  if (file.length !== header.dataOffset + header.dataLength) {
    throw new SafetensorsError(path, `changed size while being read (${header.dataOffset + header.dataLength} → ${file.length} bytes)`);
  }
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, info] of header.tensors) {
    const bytes = new Uint8Array(info.byteLength);
    bytes.set(file.subarray(info.byteOffset, info.byteOffset + info.byteLength));
    tensors.set(name, { dtype: info.dtype, shape: info.shape, bytes });
  }
  return { header, tensors };
}

/** Input of writeSafetensors: a lowbit dtype with a safetensors name, a shape, and the raw data. */
export interface SafetensorsWriteTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Raw little-endian bytes of numel × itemsize (e.g. Float32Array, Uint16Array of bf16 bits, Uint8Array). */
  readonly data: ArrayBufferView;
}

const ARG = "writeSafetensors";

/**
 * Serializes tensors exactly as the safetensors Rust crate does: tensors ordered by dtype (largest first, the
 * crate's `Dtype` order) then by name, `__metadata__` first in the header, compact JSON, the header padded with
 * spaces to a multiple of 8 bytes. Returns the bytes.
 */
export function serializeSafetensors(tensors: Readonly<Record<string, SafetensorsWriteTensor>>, metadata?: Readonly<Record<string, string>>): Uint8Array {
  if (typeof tensors !== "object" || tensors === null) throw new SafetensorsError(ARG, `expected an object of tensors but received ${describe(tensors)}`);
  const items: { name: string; st: SafetensorsFormatDType; shape: number[]; data: Uint8Array }[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const err = (m: string) => new SafetensorsError(ARG, m, { tensor: name });
    if (name === "__metadata__") throw err("the name __metadata__ is reserved");
    if (typeof t !== "object" || t === null) throw err(`expected {dtype, shape, data} but received ${describe(t)}`);
    if (!isDType(t.dtype)) throw err(`expected a lowbit dtype but received ${describe(t.dtype)}`);
    const st = DTYPES[t.dtype].safetensors;
    if (st === null) throw err(`dtype ${t.dtype} has no safetensors name (4-bit codes are stored as uint8 with a quant_state)`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw err(`expected shape to be an array of non-negative integers but received ${describe(t.shape)}`);
    }
    if (!ArrayBuffer.isView(t.data)) throw err(`expected data to be a typed array or DataView but received ${describe(t.data)}`);
    const numel = numelOf(t.shape);
    const need = numel === null ? null : (numel * SAFETENSORS_DTYPE_BITS[st]) / 8;
    if (need !== t.data.byteLength) {
      throw err(`shape [${t.shape.join(", ")}] of ${t.dtype} needs ${need} bytes but data has ${t.data.byteLength}`);
    }
    items.push({ name, st, shape: [...t.shape], data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) });
  }
  if (metadata !== undefined) {
    if (typeof metadata !== "object" || metadata === null) throw new SafetensorsError(ARG, `expected metadata to be an object of strings but received ${describe(metadata)}`);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new SafetensorsError(ARG, `expected metadata[${JSON.stringify(k)}] to be a string but received ${describe(v)}`);
    }
  }
  // Largest dtype first (keeps every tensor aligned to its element size), then by name (byte order, like Rust).
  const rank = (st: SafetensorsFormatDType) => FORMAT_DTYPE_ORDER.indexOf(st);
  items.sort((a, b) => rank(b.st) - rank(a.st) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const it of items) {
    const end = offset + it.data.byteLength;
    parts.push(`${JSON.stringify(it.name)}:{"dtype":"${it.st}","shape":[${it.shape.join(",")}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let p = 8 + headerLength;
  for (const it of items) {
    out.set(it.data, p);
    p += it.data.byteLength;
  }
  return out;
}

/**
 * Writes a safetensors file atomically: the bytes go to a temporary file in the same folder, are flushed to disk,
 * and the temporary file is renamed over `path`, so readers never see a half-written file.
 */
export function writeSafetensors(path: string, tensors: Readonly<Record<string, SafetensorsWriteTensor>>, metadata?: Readonly<Record<string, string>>): void {
  if (typeof path !== "string" || path.length === 0) throw new SafetensorsError(ARG, `expected path to be a non-empty string but received ${describe(path)}`);
  const bytes = serializeSafetensors(tensors, metadata);
  try {
    writeFileAtomic(path, (fd) => writeAll(fd, bytes));
  } catch (cause) {
    throw new SafetensorsError(path, `could not be written (${(cause as Error).message})`, { cause });
  }
}

export const SAFETENSORS_WEIGHTS_NAME = "model.safetensors";
export const SAFETENSORS_INDEX_NAME = "model.safetensors.index.json";

export interface ShardIndex {
  /** The index file's path. */
  readonly path: string;
  /** The index's `metadata` (e.g. `total_size`), or an empty object. */
  readonly metadata: Readonly<Record<string, unknown>>;
  /** tensor name → shard file name (relative to the folder). */
  readonly weightMap: ReadonlyMap<string, string>;
  /** Shard file names, `sorted(set(weight_map.values()))` like transformers. */
  readonly shards: readonly string[];
  /** Absolute paths of `shards`, same order. */
  readonly shardPaths: readonly string[];
}

/** Validates a shard name from an index: relative, inside the folder, no `..`, no backslashes or NUL. */
function checkShardName(name: string, dir: string, indexPath: string, tensor: string): string {
  const bad = (why: string) => new SafetensorsError(indexPath, `weight_map points to ${JSON.stringify(name)}, which ${why}`, { tensor });
  if (name.length === 0) throw bad("is empty");
  if (name.includes("\0")) throw bad("contains a NUL character");
  if (name.includes("\\")) throw bad("contains a backslash (shard names use '/' only)");
  if (isAbsolute(name) || posix.isAbsolute(name) || /^[A-Za-z]:/.test(name)) throw bad("is an absolute path (shards must be inside the model folder)");
  const segments = name.split("/");
  if (segments.some((s) => s === ".." || s === "." || s === "")) throw bad("has an empty, '.' or '..' path segment (shards must be inside the model folder)");
  const full = resolve(dir, name);
  const rel = relative(resolve(dir), full);
  if (rel.startsWith("..") || isAbsolute(rel)) throw bad("resolves outside the model folder");
  return full;
}

/**
 * Reads and validates `model.safetensors.index.json` (or `indexName`, e.g. a variant's index) in `dir`; every shard
 * must stay inside `dir` and exist.
 */
export function readShardIndex(dir: string, indexName: string = SAFETENSORS_INDEX_NAME): ShardIndex {
  const path = join(dir, indexName);
  let raw: string;
  try {
    raw = readFileSync(path, "utf8");
  } catch (cause) {
    throw new SafetensorsError(path, `cannot be read (${(cause as Error).message})`, { cause });
  }
  let root: StrictJsonValue;
  try {
    root = parseStrictJson(raw);
  } catch (cause) {
    throw new SafetensorsError(path, `is not valid JSON (${cause instanceof StrictJsonError ? cause.message : String(cause)})`, { cause });
  }
  if (!isStrictJsonObject(root)) throw new SafetensorsError(path, "must be a JSON object with a weight_map");
  const wm = root.get("weight_map");
  if (!isStrictJsonObject(wm)) throw new SafetensorsError(path, `weight_map must be an object of tensor name → shard file but is ${describeStrictJson(wm)}`);
  const md = root.get("metadata");
  if (md !== undefined && md !== null && !isStrictJsonObject(md)) throw new SafetensorsError(path, `metadata must be an object but is ${describeStrictJson(md)}`);
  const weightMap = new Map<string, string>();
  const fullPaths = new Map<string, string>();
  const firstTensor = new Map<string, string>();
  for (const [tensor, shard] of wm) {
    if (typeof shard !== "string") throw new SafetensorsError(path, `weight_map value must be a shard file name but is ${describeStrictJson(shard)}`, { tensor });
    if (!fullPaths.has(shard)) {
      fullPaths.set(shard, checkShardName(shard, dir, path, tensor));
      firstTensor.set(shard, tensor);
    }
    weightMap.set(tensor, shard);
  }
  const shards = [...fullPaths.keys()].sort();
  for (const shard of shards) {
    const full = fullPaths.get(shard) as string;
    if (!existsSync(full) || !statSync(full).isFile()) {
      const count = [...weightMap.values()].filter((s) => s === shard).length;
      throw new SafetensorsError(path, `shard ${JSON.stringify(shard)} is missing from ${dir} (it holds ${count} tensor(s), e.g. ${JSON.stringify(firstTensor.get(shard))})`);
    }
  }
  return {
    path,
    metadata: md instanceof Map ? strictToPlain(md) as Record<string, unknown> : {},
    weightMap,
    shards,
    shardPaths: shards.map((s) => fullPaths.get(s) as string),
  };
}

function strictToPlain(v: StrictJsonValue): unknown {
  if (v instanceof StrictJsonNumber) return v.value;
  if (Array.isArray(v)) return v.map(strictToPlain);
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, strictToPlain(x)]));
  return v;
}

/** Where a model folder keeps its weights, following transformers' precedence (spec B1). */
export type CheckpointFiles =
  | { readonly kind: "single"; readonly files: readonly string[] }
  | { readonly kind: "sharded"; readonly files: readonly string[]; readonly index: ShardIndex };

/**
 * Finds the safetensors weights of a model folder: `model.safetensors`, else `model.safetensors.index.json`
 * (with `variant`, `model.<variant>.safetensors` / `model.safetensors.index.<variant>.json`). A folder with only PyTorch pickles gets an error that says how
 * to convert them; lowbit never unpickles.
 */
export function findCheckpointFiles(dir: string, options: { variant?: string } = {}): CheckpointFiles {
  const { variant } = options;
  if (variant !== undefined && (typeof variant !== "string" || !/^[\w-]+$/.test(variant))) {
    throw new SafetensorsError(dir, `expected variant to be a name such as "fp16" but received ${describe(variant)}`);
  }
  // transformers' `_add_variant`: the variant goes before the last extension (model.fp16.safetensors,
  // model.safetensors.index.fp16.json).
  const withVariant = (name: string) => {
    if (variant === undefined) return name;
    const dot = name.lastIndexOf(".");
    return `${name.slice(0, dot)}.${variant}${name.slice(dot)}`;
  };
  const single = join(dir, withVariant(SAFETENSORS_WEIGHTS_NAME));
  if (existsSync(single)) return { kind: "single", files: [single] };
  const indexName = withVariant(SAFETENSORS_INDEX_NAME);
  if (existsSync(join(dir, indexName))) {
    const index = readShardIndex(dir, indexName);
    return { kind: "sharded", files: index.shardPaths, index };
  }
  const bin = ["pytorch_model.bin", "pytorch_model.bin.index.json"].map(withVariant).filter((f) => existsSync(join(dir, f)));
  if (bin.length > 0) {
    throw new SafetensorsError(
      dir,
      `has only PyTorch pickle weights (${bin.join(", ")}); lowbit reads safetensors only. Convert once with Python: ` +
        "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)",
    );
  }
  throw new SafetensorsError(dir, `has no ${withVariant(SAFETENSORS_WEIGHTS_NAME)} or ${indexName}`);
}
