// accelerate's disk offload folder (spec A13), readable and writable by both sides:
//   <folder>/index.json        {"<tensor name>": {"dtype": "<numpy name>", "shape": [..]}, ...} written as
//                              Python's json.dump(indent=2), merged into an existing index
//   <folder>/<tensor name>.dat the raw C-contiguous little-endian element bytes, no header
// bfloat16 is stored as its 16-bit pattern with dtype "bfloat16"; a 0-d tensor is stored as one element
// with "shape": []. The second index flavour, {"safetensors_file", "weight_name", "dtype"}, points into
// a safetensors file instead of a .dat file (read here, never written).
//
// Files are written to a temporary name in the same folder, flushed, then renamed, so a reader never
// sees a half-written tensor or index. Reads map the file (zero-copy, getBinding().mapFile).
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { endianness } from "node:os";
import { join } from "node:path";

import { ArgumentError, DTYPES, DTypeError, describe, expected, pyJsonDumps, type DType, type PyJsonValue } from "@lowbit/dtypes";
import { getBinding, writeAll, writeFileAtomic, type NativeStorage } from "@lowbit/kernels";
import { Tensor, cast, contiguous, zeros } from "@lowbit/tensor";

import { OffloadError } from "./errors.js";

/** A tensor written as `<name>.dat`. */
export interface DatIndexEntry {
  /** numpy dtype name ("float16", "int64", "bool", ...) or "bfloat16". */
  dtype: string;
  /** The tensor's shape ([] for a 0-d tensor, whose file holds one element). */
  shape: number[];
}

/** A tensor read from a safetensors file (transformers builds these for safetensors checkpoints). */
export interface SafetensorsIndexEntry {
  safetensors_file: string;
  /** Key in that file (default: the index key). */
  weight_name?: string;
  /** torch dtype name the tensor is cast to after reading ("bfloat16", "float32", ...). */
  dtype?: string;
}

export type OffloadIndexEntry = DatIndexEntry | SafetensorsIndexEntry;

/** Tensor name → entry, in insertion order (the order index.json keeps). */
export type OffloadIndex = Map<string, OffloadIndexEntry>;

/** Raw element bytes with their shape and dtype (bfloat16 / float16 as 16-bit patterns). */
export interface RawWeight {
  data: ArrayBufferView;
  shape: readonly number[];
  dtype: DType;
}

/** lowbit dtype → the name index.json records (numpy's, plus accelerate's "bfloat16"). */
const NUMPY_NAME: Partial<Record<DType, string>> = {
  float32: "float32",
  float16: "float16",
  bfloat16: "bfloat16",
  int8: "int8",
  uint8: "uint8",
  int16: "int16",
  int32: "int32",
  int64: "int64",
  bool: "bool",
};

/** index.json dtype (numpy / torch name) → lowbit dtype. */
function dtypeFromIndexName(name: string, where: string, path: string): DType {
  const bare = name.startsWith("torch.") ? name.slice(6) : name;
  for (const [dtype, numpy] of Object.entries(NUMPY_NAME)) if (numpy === bare) return dtype as DType;
  if (bare === "float8_e4m3fn" || bare === "float8_e5m2") return bare;
  throw new OffloadError(
    `${where}: index.json gives dtype ${JSON.stringify(name)}, which lowbit cannot hold (expected one of ${Object.values(NUMPY_NAME).join(", ")})`,
    path,
    null,
    { cause: new DTypeError(expected("a supported dtype", "index.json dtype", name)) },
  );
}

function checkLittleEndian(path: string): void {
  if (endianness() !== "LE") throw new OffloadError("The offload format stores host-native bytes and lowbit only reads and writes it on little-endian hosts", path);
}

/** A tensor name usable as a file name: no path separators, NUL, "." or "..". */
function checkWeightName(name: unknown, argName: string): string {
  if (typeof name !== "string" || name === "" || name === "." || name === ".." || /[/\\\0]/.test(name)) {
    throw new ArgumentError(expected('a tensor name usable as a file name (no "/", "\\" or NUL)', argName, name));
  }
  return name;
}

/** Writes `target` atomically (temp file + rename, @lowbit/kernels' writeFileAtomic), as an OffloadError on failure. */
function writeAtomic(target: string, write: (fd: number) => void, tensorName: string | null): void {
  try {
    writeFileAtomic(target, write);
  } catch (err) {
    if (err instanceof OffloadError) throw err;
    throw new OffloadError(`Could not write ${target}: ${(err as Error).message}`, target, tensorName, { cause: err });
  }
}

const CHUNK = 64 * 1024 * 1024;

function isRawWeight(w: unknown): w is RawWeight {
  return typeof w === "object" && w !== null && !(w instanceof Tensor) && ArrayBuffer.isView((w as RawWeight).data);
}

/**
 * accelerate's offload_weight: writes `<offloadFolder>/<weightName>.dat` (raw little-endian elements,
 * bf16 as its bit pattern, 0-d as one element) and records {dtype, shape} in `index` (created when not
 * given; returned). The folder must exist. The weight may be any device's tensor or raw bytes.
 * @throws {ArgumentError} bad name / weight; {DTypeError} for dtypes numpy cannot name (float8, nf4, fp4);
 *   {OffloadError} when the file cannot be written.
 */
export function offloadWeight(weight: Tensor | RawWeight, weightName: string, offloadFolder: string, index: OffloadIndex = new Map()): OffloadIndex {
  const name = checkWeightName(weightName, "offloadWeight's weightName");
  if (typeof offloadFolder !== "string" || offloadFolder === "") throw new ArgumentError(expected("a folder path", "offloadWeight's offloadFolder", offloadFolder));
  if (!(index instanceof Map)) throw new ArgumentError(expected("an OffloadIndex (Map)", "offloadWeight's index", index));
  checkLittleEndian(offloadFolder);
  const target = join(offloadFolder, `${name}.dat`);
  let shape: number[];
  let dtype: DType;
  let write: (fd: number) => void;
  if (weight instanceof Tensor) {
    weight._assertLive(`offloadWeight("${name}")`);
    shape = [...weight.shape];
    dtype = weight.dtype;
    if (NUMPY_NAME[dtype] === undefined) {
      throw new DTypeError(`offloadWeight("${name}"): accelerate's offload format has no ${dtype} (numpy cannot name it); cast the tensor or view its bytes as uint8 first`);
    }
    write = (fd) => {
      const c = weight.isContiguous ? weight : contiguous(weight);
      try {
        const total = c.numel * DTYPES[dtype].bytes;
        const buf = new Uint8Array(Math.min(total, CHUNK));
        for (let off = 0; off < total; off += CHUNK) {
          const n = Math.min(CHUNK, total - off);
          const view = n === buf.length ? buf : buf.subarray(0, n);
          getBinding().download(c.storage, c.byteOffset + off, view);
          writeAll(fd, view);
        }
      } finally {
        if (c !== weight) c.dispose();
      }
    };
  } else if (isRawWeight(weight)) {
    dtype = weight.dtype;
    if (NUMPY_NAME[dtype] === undefined) throw new DTypeError(`offloadWeight("${name}"): accelerate's offload format has no ${String(dtype)}; expected one of ${Object.keys(NUMPY_NAME).join(", ")}`);
    if (!Array.isArray(weight.shape) || weight.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new ArgumentError(expected("an array of non-negative integers", `offloadWeight("${name}")'s shape`, weight.shape));
    }
    shape = [...weight.shape];
    const numel = shape.reduce((a, b) => a * b, 1);
    const expectedBytes = numel * DTYPES[dtype].bytes;
    if (weight.data.byteLength !== expectedBytes) {
      throw new ArgumentError(`Expected ${expectedBytes} bytes (${numel} × ${dtype}) for offloadWeight("${name}")'s data but received ${weight.data.byteLength}`);
    }
    const bytes = new Uint8Array(weight.data.buffer, weight.data.byteOffset, weight.data.byteLength);
    write = (fd) => writeAll(fd, bytes);
  } else {
    throw new ArgumentError(expected("a Tensor or { data, shape, dtype }", `offloadWeight("${name}")'s weight`, weight));
  }
  writeAtomic(target, write, name);
  index.set(name, { dtype: NUMPY_NAME[dtype]!, shape });
  return index;
}

function checkDatEntry(info: unknown, where: string, path: string): { dtype: DType; shape: number[] } {
  if (typeof info !== "object" || info === null) throw new OffloadError(`${where}: expected {"dtype", "shape"} but received ${describe(info)}`, path);
  const { dtype, shape } = info as { dtype?: unknown; shape?: unknown };
  if (typeof dtype !== "string") throw new OffloadError(`${where}: expected a dtype string but received ${describe(dtype)}`, path);
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== "number" || !Number.isSafeInteger(d) || d < 0)) {
    throw new OffloadError(`${where}: expected a shape of non-negative integers but received ${describe(shape)}`, path);
  }
  return { dtype: dtypeFromIndexName(dtype, where, path), shape: [...(shape as number[])] };
}

/**
 * accelerate's load_offloaded_weight: maps `weightFile` (zero-copy, read-only) as a CPU tensor with the
 * index entry's dtype and shape. The tensor owns the mapping: dispose() unmaps it.
 * @throws {OffloadError} when the entry is malformed, the dtype unsupported, or the file size is not
 *   numel × itemsize (one element for a 0-d tensor).
 */
export function loadOffloadedWeight(weightFile: string, weightInfo: DatIndexEntry): Tensor {
  if (typeof weightFile !== "string" || weightFile === "") throw new ArgumentError(expected("a file path", "loadOffloadedWeight's weightFile", weightFile));
  checkLittleEndian(weightFile);
  const { dtype, shape } = checkDatEntry(weightInfo, `loadOffloadedWeight(${JSON.stringify(weightFile)})`, weightFile);
  const numel = shape.reduce((a, b) => a * b, 1);
  const expectedBytes = numel * DTYPES[dtype].bytes;
  let size: number;
  try {
    size = statSync(weightFile).size;
  } catch (err) {
    throw new OffloadError(`Could not read ${weightFile}: ${(err as Error).message}`, weightFile, null, { cause: err });
  }
  if (size !== expectedBytes) {
    throw new OffloadError(`${weightFile} holds ${size} bytes but index.json describes ${dtype} [${shape.join(", ")}] = ${expectedBytes} bytes`, weightFile);
  }
  if (numel === 0) return zeros(shape, { dtype });
  let storage: NativeStorage;
  try {
    storage = getBinding().mapFile(weightFile);
  } catch (err) {
    throw new OffloadError(`Could not map ${weightFile}: ${(err as Error).message}`, weightFile, null, { cause: err });
  }
  return Tensor.fromStorage(storage, 0, shape, dtype);
}

function readIndexFile(file: string): OffloadIndex {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new OffloadError(`Could not read ${file}: ${(err as Error).message}`, file, null, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new OffloadError(`${file} is not valid JSON: ${(err as Error).message}`, file, null, { cause: err });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new OffloadError(`${file}: expected a JSON object of tensor name → entry`, file);
  const index: OffloadIndex = new Map();
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw new OffloadError(`${file}: the entry of "${name}" is not an object`, file, name);
    index.set(name, entry as OffloadIndexEntry);
  }
  return index;
}

/** Reads `<folder>/index.json` (entries are validated when their tensor is loaded). */
export function loadOffloadIndex(offloadFolder: string): OffloadIndex {
  if (typeof offloadFolder !== "string" || offloadFolder === "") throw new ArgumentError(expected("a folder path", "loadOffloadIndex's offloadFolder", offloadFolder));
  return readIndexFile(join(offloadFolder, "index.json"));
}

/**
 * accelerate's save_offload_index: merges `index` into `<folder>/index.json` (existing keys first and
 * updated in place, new keys appended) and writes it as Python's json.dump(indent=2), atomically. An
 * empty index writes nothing.
 */
export function saveOffloadIndex(index: OffloadIndex | Readonly<Record<string, OffloadIndexEntry>>, offloadFolder: string): void {
  if (typeof offloadFolder !== "string" || offloadFolder === "") throw new ArgumentError(expected("a folder path", "saveOffloadIndex's offloadFolder", offloadFolder));
  if (typeof index !== "object" || index === null) throw new ArgumentError(expected("an OffloadIndex (Map or Record)", "saveOffloadIndex's index", index));
  const entries = index instanceof Map ? [...index.entries()] : Object.entries(index);
  if (entries.length === 0) return;
  const file = join(offloadFolder, "index.json");
  const merged: OffloadIndex = existsSync(file) ? readIndexFile(file) : new Map();
  for (const [k, v] of entries) merged.set(k, v);
  // Entries hold only strings and integer arrays, which PyJsonValue covers.
  const text = pyJsonDumps(merged as ReadonlyMap<string, unknown> as ReadonlyMap<string, PyJsonValue>, { indent: 2 });
  writeAtomic(file, (fd) => writeAll(fd, new TextEncoder().encode(text)), null);
}

/** accelerate's offload_state_dict: creates the folder, writes every tensor, then merges the index. */
export function offloadStateDict(saveDir: string, stateDict: Readonly<Record<string, Tensor>> | ReadonlyMap<string, Tensor>): OffloadIndex {
  if (typeof saveDir !== "string" || saveDir === "") throw new ArgumentError(expected("a folder path", "offloadStateDict's saveDir", saveDir));
  try {
    mkdirSync(saveDir, { recursive: true });
  } catch (err) {
    throw new OffloadError(`Could not create ${saveDir}: ${(err as Error).message}`, saveDir, null, { cause: err });
  }
  const index: OffloadIndex = new Map();
  const entries = stateDict instanceof Map ? [...stateDict.entries()] : Object.entries(stateDict);
  for (const [name, t] of entries) offloadWeight(t, name, saveDir, index);
  saveOffloadIndex(index, saveDir);
  return index;
}

/** safetensors dtype string → lowbit dtype, from the one dtype table. */
function dtypeFromSafetensors(s: string): DType | undefined {
  return (Object.values(DTYPES) as Array<{ name: DType; safetensors: string | null }>).find((d) => d.safetensors === s)?.name;
}

/** Reads one tensor of a safetensors file: maps the file and views it (copies when misaligned). */
function readSafetensorsTensor(file: string, weightName: string, key: string): Tensor {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (err) {
    throw new OffloadError(`Could not open ${file} for "${key}": ${(err as Error).message}`, file, key, { cause: err });
  }
  let header: Record<string, unknown>;
  let dataStart: number;
  try {
    const fileSize = fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (fileSize < 8 || readSync(fd, lenBuf, 0, 8, 0) !== 8) throw new OffloadError(`${file} is too short to be a safetensors file`, file, key);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(fileSize - 8) || n > 100_000_000n) throw new OffloadError(`${file}: safetensors header length ${n} does not fit the file (${fileSize} bytes)`, file, key);
    const hb = Buffer.alloc(Number(n));
    if (readSync(fd, hb, 0, hb.length, 8) !== hb.length) throw new OffloadError(`${file}: could not read the safetensors header`, file, key);
    header = JSON.parse(hb.toString("utf8")) as Record<string, unknown>;
    dataStart = 8 + Number(n);
    const entry = header[weightName] as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | undefined;
    if (entry === undefined || typeof entry !== "object" || entry === null) throw new OffloadError(`${file} has no tensor "${weightName}" (for offloaded "${key}")`, file, key);
    const dtype = typeof entry.dtype === "string" ? dtypeFromSafetensors(entry.dtype) : undefined;
    if (dtype === undefined) throw new OffloadError(`${file}: tensor "${weightName}" has dtype ${describe(entry.dtype)}, which lowbit cannot hold`, file, key);
    const shape = entry.shape;
    const offs = entry.data_offsets;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0) || !Array.isArray(offs) || offs.length !== 2) {
      throw new OffloadError(`${file}: tensor "${weightName}" has a malformed shape or data_offsets`, file, key);
    }
    const [begin, end] = offs as [number, number];
    const bytes = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPES[dtype].bytes;
    if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || end - begin !== bytes || dataStart + end > fileSize || begin < 0) {
      throw new OffloadError(`${file}: tensor "${weightName}" data_offsets [${begin}, ${end}] do not match ${dtype} [${(shape as number[]).join(", ")}] in a ${fileSize}-byte file`, file, key);
    }
    closeSync(fd);
    if (bytes === 0) return zeros(shape as number[], { dtype });
    const binding = getBinding();
    const mapped = binding.mapFile(file);
    const at = dataStart + begin;
    if (at % DTYPES[dtype].bytes === 0) return Tensor.fromStorage(mapped, at, shape as number[], dtype);
    // Misaligned data (a header length that is not a multiple of the element size): copy out.
    const copy = binding.allocate("cpu", bytes);
    try {
      binding.copyBytes(copy, 0, mapped, at, bytes);
    } finally {
      mapped.dispose();
    }
    return Tensor.fromStorage(copy, 0, shape as number[], dtype);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // Already closed after the header was read.
    }
    if (err instanceof OffloadError) throw err;
    throw new OffloadError(`Could not read "${weightName}" from ${file}: ${(err as Error).message}`, file, key, { cause: err });
  }
}

export interface OffloadedWeightsLoaderOptions {
  /** Tensors kept in RAM; they win over the folder. */
  stateDict?: Readonly<Record<string, Tensor>> | ReadonlyMap<string, Tensor>;
  /** The offload folder (its index.json is read when `index` is not given). */
  saveFolder?: string;
  index?: OffloadIndex | Readonly<Record<string, OffloadIndexEntry>>;
}

/**
 * accelerate's OffloadedWeightsLoader: a read-only mapping name → tensor over an in-RAM state dict, a
 * folder of .dat files and safetensors references. get() always returns a new Tensor the caller owns
 * (a view for in-RAM tensors, a file mapping for .dat entries): dispose it after use.
 */
export class OffloadedWeightsLoader {
  readonly #stateDict: Map<string, Tensor>;
  readonly #saveFolder: string | null;
  readonly #index: OffloadIndex;
  readonly #keys: string[];

  constructor(options: OffloadedWeightsLoaderOptions) {
    if (typeof options !== "object" || options === null) throw new ArgumentError(expected("{ stateDict?, saveFolder?, index? }", "OffloadedWeightsLoader's options", options));
    const { stateDict, saveFolder, index } = options;
    if (stateDict === undefined && saveFolder === undefined && index === undefined) {
      throw new ArgumentError("OffloadedWeightsLoader needs a stateDict, a saveFolder or an index containing offloaded weights");
    }
    if (saveFolder !== undefined && (typeof saveFolder !== "string" || saveFolder === "")) throw new ArgumentError(expected("a folder path", "OffloadedWeightsLoader's saveFolder", saveFolder));
    this.#stateDict = new Map(stateDict === undefined ? [] : stateDict instanceof Map ? stateDict : Object.entries(stateDict));
    this.#saveFolder = saveFolder ?? null;
    if (index !== undefined) this.#index = index instanceof Map ? new Map(index) : new Map(Object.entries(index));
    else if (saveFolder !== undefined) this.#index = loadOffloadIndex(saveFolder);
    else this.#index = new Map();
    this.#keys = [...this.#stateDict.keys(), ...[...this.#index.keys()].filter((k) => !this.#stateDict.has(k))];
  }

  get size(): number {
    return this.#keys.length;
  }

  keys(): string[] {
    return [...this.#keys];
  }

  has(key: string): boolean {
    return this.#stateDict.has(key) || this.#index.has(key);
  }

  /** The index entry of a key (undefined for in-RAM tensors and unknown keys). */
  entry(key: string): OffloadIndexEntry | undefined {
    return this.#index.get(key);
  }

  /**
   * The tensor named `key`, on the CPU (in-RAM tensors keep their device).
   * @throws {ArgumentError} for an unknown key; {OffloadError} when its file is missing or inconsistent.
   */
  get(key: string): Tensor {
    const inRam = this.#stateDict.get(key);
    if (inRam !== undefined) return inRam.detach();
    const info = this.#index.get(key);
    if (info === undefined) throw new ArgumentError(expected(`one of the ${this.#keys.length} offloaded tensor names`, "OffloadedWeightsLoader.get's key", key));
    if ("safetensors_file" in info && typeof info.safetensors_file === "string") {
      const t = readSafetensorsTensor(info.safetensors_file, info.weight_name ?? key, key);
      if (info.dtype === undefined) return t;
      const want = dtypeFromIndexName(info.dtype, `OffloadedWeightsLoader.get("${key}")`, info.safetensors_file);
      if (want === t.dtype) return t;
      try {
        return cast(t, want);
      } finally {
        t.dispose();
      }
    }
    if (this.#saveFolder === null) throw new OffloadError(`"${key}" is a .dat entry but the loader has no saveFolder`, "", key);
    checkWeightName(key, "OffloadedWeightsLoader.get's key");
    const file = join(this.#saveFolder, `${key}.dat`);
    try {
      return loadOffloadedWeight(file, info as DatIndexEntry);
    } catch (err) {
      if (err instanceof OffloadError && err.tensorName === null) throw new OffloadError(`"${key}": ${err.message}`, err.path, key, { cause: err });
      throw err;
    }
  }
}
