// Device loops for the kernel tests: describeOnDevices runs a describe block once on "cpu" and once on every
// CUDA device the addon reports, and testDevice() tells the block's storage helpers where to allocate.

import { afterAll, beforeAll, describe } from "vitest";

import { devices } from "../src/index.js";

let current = "cpu";

/** The device of the block whose tests are running ("cpu" outside describeOnDevices). */
export function testDevice(): string {
  return current;
}

/**
 * describe(name) with one nested `on <device>` block per device ("cpu", then "cuda:0" ... when the addon sees
 * GPUs). `fn` receives the device while tests are collected, to leave out the few checks that only exist on
 * the CPU (file mappings); storage helpers read it while tests run, through testDevice(). The
 * LOWBIT_CPU_ISA=generic rerun of the portable CPU kernels (a child process of linalg.test.ts) stays on the CPU.
 */
export function describeOnDevices(name: string, fn: (device: string) => void): void {
  const list = process.env.LOWBIT_CPU_ISA === "generic" ? ["cpu"] : devices();
  describe(name, () => {
    for (const device of list) {
      describe(`on ${device}`, () => {
        beforeAll(() => {
          current = device;
        });
        afterAll(() => {
          current = "cpu";
        });
        fn(device);
      });
    }
  });
}
