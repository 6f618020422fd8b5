// Explicit memory: ref-counted storages shared by views, dispose / Symbol.dispose, tidy and keep,
// DisposedError on use after dispose, and file-mapped storages viewed zero-copy.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { getBinding, memoryStats } from "@lowbit/kernels";
import * as lb from "../src/index.js";
import { Tensor, keep, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import { expectNoLeak, vals } from "./util.js";

forEachDevice((device) => {
  describe("memory", () => {
    it("a storage lives until its last view is disposed", () => {
      expectNoLeak(device, () => {
        const before = memoryStats(device).allocatedBytes;
        const t = lb.zeros([256], { device });
        const r = t.reshape(16, 16); // every view holds its own reference
        const v = r.transpose(0, 1);
        t.dispose();
        r.dispose();
        expect(memoryStats(device).allocatedBytes - before).toBeGreaterThanOrEqual(1024);
        const s = v.sum();
        expect(s.item()).toBe(0);
        s.dispose();
        v.dispose();
        expect(memoryStats(device).allocatedBytes - before).toBe(0);
        expect(v.disposed).toBe(true);
        t.dispose(); // idempotent
      });
    });

    it("using a disposed tensor throws DisposedError, never crashes", () => {
      const t = lb.ones([3], { device });
      t.dispose();
      expect(() => t.toTypedArray()).toThrow(lb.DisposedError);
      expect(() => t.add(1)).toThrow(lb.DisposedError);
      expect(() => lb.add(lb.ones([3], { device }), t)).toThrow(/b .*was disposed/);
      expect(() => t.reshape(3)).toThrow(lb.DisposedError);
      expect(() => t.storage).toThrow(lb.DisposedError);
      expect(String(t)).toContain("disposed");
    });

    it("Symbol.dispose frees at the end of a using-style scope", () => {
      expectNoLeak(device, () => {
        const t = lb.ones([8], { device });
        t[Symbol.dispose]();
        expect(t.disposed).toBe(true);
      });
    });

    it("tidy disposes everything but its result and kept tensors; results move to the outer scope", () => {
      expectNoLeak(device, () => {
        let inner: Tensor | undefined;
        let kept: Tensor | undefined;
        const outer = tidy(() => {
          const r = tidy(() => {
            const a = lb.ones([4], { device });
            const b = a.mul(3).add(1);
            kept = keep(a.mul(2));
            inner = a;
            return { b, list: [b.exp()] };
          });
          expect(inner!.disposed).toBe(true);
          expect(r.b.disposed).toBe(false);
          return r.b.add(1);
        });
        expect(outer.item === undefined).toBe(false);
        expect(vals(outer)).toEqual([5, 5, 5, 5]);
        expect(kept!.disposed).toBe(false);
        outer.dispose();
        kept!.dispose();
      });
    });

    it("tidy cleans up when fn throws and refuses async functions", () => {
      expectNoLeak(device, () => {
        expect(() =>
          tidy(() => {
            lb.ones([4], { device });
            throw new Error("boom");
          }),
        ).toThrow("boom");
        expect(() => tidy(() => Promise.resolve(lb.ones([2], { device })) as unknown as Tensor)).toThrow(lb.ArgumentError);
      });
    });
  });
});

describe("file-mapped storages", () => {
  it("Tensor.fromStorage views a mapping zero-copy; the mapping is freed with the last view", () => {
    const dir = mkdtempSync(join(tmpdir(), "lowbit-tensor-"));
    try {
      const path = join(dir, "weights.bin");
      const values = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
      writeFileSync(path, Buffer.concat([Buffer.alloc(16), Buffer.from(values.buffer)]));
      const storage = getBinding().mapFile(path);
      const a = Tensor.fromStorage(storage, 16, [2, 4], "float32");
      const b = Tensor.fromStorage(storage, 32, [4], "float32");
      expect(vals(a)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(vals(a.mul(2).sum(1))).toEqual([20, 52]);
      a.dispose();
      expect(storage.disposed).toBe(false);
      expect(vals(b)).toEqual([5, 6, 7, 8]);
      b.dispose();
      expect(storage.disposed).toBe(true);
      const s2 = getBinding().mapFile(path);
      expect(() => Tensor.fromStorage(s2, 20, [8], "float32")).toThrow(lb.ShapeError);
      expect(() => Tensor.fromStorage(s2, 2, [1], "float32")).toThrow(lb.ArgumentError);
      s2.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
