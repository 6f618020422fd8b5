// writeFileAtomic: the target appears whole or not at all, and no temporary file is left behind.

import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { writeAll, writeFileAtomic } from "../src/index.js";

describe("writeFileAtomic", () => {
  let dir = "";
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "lowbit-files-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("writes the bytes and replaces an existing file", () => {
    const path = join(dir, "a.bin");
    writeFileSync(path, "old");
    writeFileAtomic(path, (fd) => writeAll(fd, new Uint8Array([1, 2, 3])));
    expect([...readFileSync(path)]).toEqual([1, 2, 3]);
    expect(readdirSync(dir)).toEqual(["a.bin"]);
  });

  it("leaves the old file untouched and no temporary file when the writer throws", () => {
    const path = join(dir, "a.bin");
    writeFileSync(path, "old");
    expect(() =>
      writeFileAtomic(path, (fd) => {
        writeAll(fd, new Uint8Array([9, 9]));
        throw new Error("disk full");
      }),
    ).toThrowError("disk full");
    expect(readFileSync(path, "utf8")).toBe("old");
    expect(readdirSync(dir)).toEqual(["a.bin"]);
  });

  it("rethrows when the folder does not exist", () => {
    expect(() => writeFileAtomic(join(dir, "missing", "a.bin"), () => {})).toThrowError(/ENOENT/);
  });
});
