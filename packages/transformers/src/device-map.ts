// Device maps for model loading: where each placement unit of a model (embed_tokens, each decoder layer, the final
// norm, lm_head) lives. Accepts "cpu", "cuda" / "cuda:N", a plain Record from module names to devices (transformers'
// `device_map` dict; an integer N means "cuda:N"; "" covers everything), and "auto".
//
// "auto" is a seam for @lowbit/accelerate's planner (inferAutoDeviceMap: per-device memory budgets, balanced splits,
// offload). Until it is wired in here, the built-in plan puts everything on cuda:0 when a GPU is present and the
// model fits in its free memory, else on the CPU; callers can also pass their own planner
// (`fromPretrained(dir, { deviceMapPlanner })`). Offload targets ("disk", "meta") belong to accelerate and are refused.

import { ArgumentError, describe } from "@lowbit/dtypes";
import { getBinding } from "@lowbit/kernels";
import { availableDevices, normalizeDevice, type Device } from "@lowbit/tensor";

/** What `deviceMap` accepts: "auto", a device ("cpu", "cuda", "cuda:N"), or a Record of module name → device. */
export type DeviceMapOption = "auto" | Device | Readonly<Record<string, string | number>>;

/** A unit the planner places whole (accelerate's no-split unit), with the bytes its tensors will take. */
export interface PlacementUnit {
  /** HF module name: "model.embed_tokens", "model.layers.0", ..., "model.norm", "lm_head". */
  readonly name: string;
  /** Bytes of the unit's parameters and buffers after quantization (what it occupies once loaded). */
  readonly bytes: number;
  /** Name of a unit whose weight this one shares (lm_head tied to embed_tokens), or null. */
  readonly tiedTo: string | null;
}

/** Context handed to an "auto" planner. */
export interface DevicePlanContext {
  /** Devices usable now, "cpu" first (from @lowbit/tensor's availableDevices()). */
  readonly devices: readonly Device[];
}

/**
 * The seam for @lowbit/accelerate: plans `deviceMap: "auto"` from the units (forward order) and returns unit name →
 * device. A returned map may name any module prefix, as transformers' `device_map` dict does.
 */
export type AutoDeviceMapPlanner = (units: readonly PlacementUnit[], context: DevicePlanContext) => Readonly<Record<string, string | number>>;

/** Free-memory headroom the built-in "auto" plan keeps on the GPU for activations and the KV cache. */
export const AUTO_GPU_HEADROOM = 0.9;

/**
 * The built-in "auto" plan (to be replaced by @lowbit/accelerate's inferAutoDeviceMap): everything on cuda:0 when a
 * GPU is available and the model fits in 90% of its free memory, else everything on the CPU.
 */
export function planAutoDeviceMap(units: readonly PlacementUnit[], context: DevicePlanContext): Record<string, Device> {
  const gpu = context.devices.find((d) => d.startsWith("cuda:"));
  let target: Device = "cpu";
  if (gpu !== undefined) {
    const total = units.reduce((s, u) => s + u.bytes, 0);
    const free = getBinding().deviceInfo(gpu).freeBytes;
    if (total <= free * AUTO_GPU_HEADROOM) target = gpu;
  }
  return Object.fromEntries(units.map((u) => [u.name, target]));
}

/** A device-map value: "cpu", "cuda", "cuda:N" or an integer N (= "cuda:N"), available on this machine. */
function deviceValue(value: unknown, key: string, available: readonly Device[]): Device {
  if (value === "disk" || value === "meta") {
    throw new ArgumentError(`deviceMap[${JSON.stringify(key)}] is ${JSON.stringify(value)}: offloading to disk is not supported by the loader yet (it belongs to @lowbit/accelerate)`);
  }
  const device = typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? `cuda:${value}` : normalizeDevice(value, `deviceMap[${JSON.stringify(key)}]`);
  if (!available.includes(device)) {
    throw new ArgumentError(`Expected an available device (${available.join(", ")}) for deviceMap[${JSON.stringify(key)}] but received ${describe(value)}`);
  }
  return device;
}

/** Whether `prefix` is `name` or a dotted ancestor of it ("" is everyone's ancestor). */
function covers(prefix: string, name: string): boolean {
  return prefix === "" || name === prefix || name.startsWith(`${prefix}.`);
}

/**
 * Resolves a device map to one device per unit. A Record is matched like transformers' `device_map`: each unit takes
 * the device of the most specific key that is the unit or one of its ancestors. A key inside a unit (e.g.
 * "model.layers.0.mlp") may not move part of it elsewhere, and every key must name a module of the model.
 * @throws ArgumentError naming the key or unit for a bad value, an unknown key, a split unit or a unit with no device
 */
export function resolveDeviceMap(
  option: DeviceMapOption | undefined,
  units: readonly PlacementUnit[],
  options: { planner?: AutoDeviceMapPlanner; devices?: readonly Device[] } = {},
): Record<string, Device> {
  const available = options.devices ?? availableDevices();
  let map: Readonly<Record<string, unknown>>;
  if (option === undefined || typeof option === "string") {
    const o = option ?? "cpu";
    if (o === "auto") {
      const planner = options.planner ?? planAutoDeviceMap;
      if (typeof planner !== "function") throw new ArgumentError(`Expected a function for deviceMapPlanner but received ${describe(planner)}`);
      map = planner(units, { devices: available });
      if (typeof map !== "object" || map === null) throw new ArgumentError(`Expected the deviceMap planner to return a Record of unit → device but it returned ${describe(map)}`);
    } else {
      map = { "": o };
    }
  } else if (typeof option === "object" && option !== null && !Array.isArray(option)) {
    map = option;
  } else {
    throw new ArgumentError(`Expected "auto", "cpu", "cuda:N" or a Record of module → device for deviceMap but received ${describe(option)}`);
  }
  const entries = Object.entries(map).map(([key, value]) => ({ key, device: deviceValue(value, key, available) }));
  const out: Record<string, Device> = {};
  for (const unit of units) {
    let best: { key: string; device: Device } | null = null;
    for (const e of entries) if (covers(e.key, unit.name) && (best === null || e.key.length > best.key.length)) best = e;
    if (best === null) {
      throw new ArgumentError(`deviceMap gives no device for ${JSON.stringify(unit.name)} (add it, one of its parents, or "" for everything)`);
    }
    out[unit.name] = best.device;
  }
  for (const e of entries) {
    const inside = units.find((u) => e.key.startsWith(`${u.name}.`));
    if (inside !== undefined) {
      if (e.device !== out[inside.name]) {
        throw new ArgumentError(
          `deviceMap puts ${JSON.stringify(e.key)} on ${e.device} but the rest of ${JSON.stringify(inside.name)} on ${out[inside.name]}; a unit (a decoder layer, the embeddings, the final norm, lm_head) lives on one device`,
        );
      }
      continue;
    }
    if (!units.some((u) => covers(e.key, u.name))) {
      throw new ArgumentError(`deviceMap key ${JSON.stringify(e.key)} names no module of the model (units: ${units.map((u) => u.name).join(", ")})`);
    }
  }
  return out;
}
