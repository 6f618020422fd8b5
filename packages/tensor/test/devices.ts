// forEachDevice: runs one test body for "cpu" and for every CUDA device the addon sees, so each op
// test file is written once and covers every backend (candle's test_device!).

import { describe } from "vitest";
import { availableDevices, type Device } from "../src/index.js";

export function forEachDevice(fn: (device: Device) => void): void {
  for (const device of availableDevices()) describe(`on ${device}`, () => fn(device));
}
