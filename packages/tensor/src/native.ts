// The one place @lowbit/tensor reaches the native addon: a cached Binding plus dtype-id and device
// helpers. Ops call `native()` and pass (storage, byteOffset) pairs exactly as binding.ts documents.

import { ArgumentError, DTYPES, expected, type DType } from "@lowbit/dtypes";
import { getBinding, type Binding } from "@lowbit/kernels";

let cached: Binding | null = null;

/** The addon (loaded and initialized by @lowbit/kernels on first use). */
export function native(): Binding {
  if (cached === null) cached = getBinding();
  return cached;
}

/** Stable numeric id of a dtype, as the kernels take it. */
export function dtypeId(dtype: DType): number {
  return DTYPES[dtype].id;
}

/** Devices a tensor can live on: "cpu" or "cuda:N" ("cuda" means "cuda:0"). */
export type Device = string;

const CUDA_RE = /^cuda:(0|[1-9][0-9]*)$/;

/** Validates and canonicalises a device string. */
export function normalizeDevice(device: unknown, name = "device"): Device {
  if (device === "cpu") return "cpu";
  if (device === "cuda") return "cuda:0";
  if (typeof device === "string" && CUDA_RE.test(device)) return device;
  throw new ArgumentError(expected(`"cpu" or "cuda:N"`, name, device));
}

/** Every device usable now: "cpu" first, then each CUDA device the addon sees. */
export function availableDevices(): Device[] {
  const n = native().cudaDeviceCount();
  return ["cpu", ...Array.from({ length: n }, (_, i) => `cuda:${i}`)];
}
