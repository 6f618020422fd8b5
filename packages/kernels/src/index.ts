// @lowbit/kernels: the native compute kernels behind @lowbit/tensor. getBinding() loads and initializes
// the addon once; the raw Binding type, the op-id tables, the error classes and a few typed device
// helpers (devices, parseDevice, memoryStats) are re-exported here. Users normally go through
// @lowbit/tensor instead of calling the binding directly.
import { resolve } from "node:path";

import { describe } from "@lowbit/dtypes";

import type { Binding, NativeErrorClasses, NativeMemoryStats } from "./binding.js";
import {
  ArgumentError,
  DTypeError,
  DeviceError,
  DisposedError,
  FileError,
  OutOfMemoryError,
  ShapeError,
} from "./errors.js";
import { loadAddon, type LoadKernelsOptions } from "./loader.js";

export type {
  Binding,
  BinaryOpId,
  NativeDeviceInfo,
  NativeErrorClasses,
  NativeMemoryStats,
  NativeStorage,
  QuantTypeId,
  ReduceOpId,
  Storage,
  UnaryOpId,
} from "./binding.js";
export { BinaryOp, QuantType, ReduceOp, UnaryOp } from "./binding.js";
export {
  ArgumentError,
  DTypeError,
  DeviceError,
  DisposedError,
  FileError,
  KernelsLoadError,
  LowbitError,
  OutOfMemoryError,
  ShapeError,
} from "./errors.js";
export { BUILD_COMMAND, LOCAL_BUILD_PATH, type LoadKernelsOptions } from "./loader.js";
export { writeAll, writeFileAtomic } from "./files.js";

// Every storage is Disposable: `using s = binding.allocate("cpu", n)` frees it at the end of the scope.
declare module "./binding.js" {
  interface NativeStorage {
    [Symbol.dispose](): void;
  }
}

/** The classes native code throws (handed to the addon's initialize()). */
const ERROR_CLASSES: NativeErrorClasses = {
  ArgumentError,
  DTypeError,
  ShapeError,
  DisposedError,
  DeviceError,
  OutOfMemoryError,
  FileError,
};

let loaded: { binding: Binding; source: string } | undefined;

function prepare(binding: Binding): Binding {
  binding.initialize(ERROR_CLASSES);
  // The addon exports its Storage class; Symbol.dispose is added here, which is simpler than fetching the
  // well-known symbol from native code.
  const storageClass = (binding as unknown as { Storage?: { prototype: object } }).Storage;
  const proto = storageClass?.prototype ?? Object.getPrototypeOf(binding.allocate("cpu", 0));
  if (!Object.prototype.hasOwnProperty.call(proto, Symbol.dispose)) {
    Object.defineProperty(proto, Symbol.dispose, {
      value: function dispose(this: { dispose(): void }) {
        this.dispose();
      },
      writable: true,
      configurable: true,
    });
  }
  return binding;
}

/**
 * Loads the addon with explicit options (a custom `nativeBinding` path or object) and makes it the one
 * getBinding() returns. Call it before anything else uses the kernels; calling it again with the same
 * options returns the same binding.
 * @throws {KernelsLoadError} when the addon cannot be loaded (the message says how to fix it).
 * @throws {ArgumentError} when a different addon was already loaded.
 */
export function loadKernels(options: LoadKernelsOptions = {}): Binding {
  if (loaded !== undefined) {
    const wanted = options.nativeBinding;
    const same = wanted === undefined || wanted === loaded.binding || (typeof wanted === "string" && resolve(wanted) === loaded.source);
    if (!same) {
      throw new ArgumentError(
        `Expected loadKernels() to be called before the kernels were first used, with one nativeBinding, but the addon was already loaded from ${loaded.source}`,
      );
    }
    return loaded.binding;
  }
  const result = loadAddon(options);
  prepare(result.binding);
  loaded = result;
  return result.binding;
}

/**
 * The initialized native binding (loaded on first call from the local build or LOWBIT_KERNELS_PATH).
 * @throws {KernelsLoadError} when the addon cannot be loaded.
 */
export function getBinding(): Binding {
  return loaded?.binding ?? loadKernels();
}

// ---- devices ---------------------------------------------------------------------------------------------

/** A parsed device string. */
export type Device = { readonly type: "cpu"; readonly index: 0 } | { readonly type: "cuda"; readonly index: number };

/** The canonical string of a device: "cpu" or "cuda:N". */
export function formatDevice(device: Device): string {
  return device.type === "cpu" ? "cpu" : `cuda:${device.index}`;
}

/**
 * Parses "cpu", "cuda" (= "cuda:0") or "cuda:N". Only the syntax is checked; whether the device exists
 * is checked when it is used.
 * @throws {ArgumentError} for anything else.
 */
export function parseDevice(device: string): Device {
  if (typeof device === "string") {
    if (device === "cpu") return { type: "cpu", index: 0 };
    if (device === "cuda") return { type: "cuda", index: 0 };
    const m = /^cuda:(\d{1,6})$/.exec(device);
    if (m?.[1] !== undefined) return { type: "cuda", index: Number(m[1]) };
  }
  throw new ArgumentError(`Expected a device string ("cpu", "cuda" or "cuda:N") for device but received ${describe(device)}`);
}

/** Every usable device: "cpu" first, then "cuda:0" ... "cuda:N-1". */
export function devices(): string[] {
  const count = getBinding().cudaDeviceCount();
  return ["cpu", ...Array.from({ length: count }, (_, i) => `cuda:${i}`)];
}

/**
 * Live / peak / reserved bytes of storages on `device` (file mappings count as neither).
 * @throws {ArgumentError} for a malformed device string; {DeviceError} for an unavailable CUDA device.
 */
export function memoryStats(device: string | Device = "cpu"): NativeMemoryStats {
  const name = typeof device === "string" ? formatDevice(parseDevice(device)) : formatDevice(device);
  return getBinding().memoryStats(name);
}
