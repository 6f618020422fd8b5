// Atomic file writes for every package that saves files (checkpoints, configs, offload folders): the
// bytes go to a temporary file in the target's folder, are flushed, and are renamed over the target, so
// a crash or an error never leaves a half-written file under the final name.

import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** Writes all of `bytes` at the file descriptor's position (writeSync may write less per call). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

/**
 * Creates `path` atomically: `write(fd)` fills a new temporary file beside it, which is then fsynced and
 * renamed over `path`. On any error the temporary file is removed and the error is rethrown unchanged
 * (callers wrap it in their own typed error naming what they were writing).
 */
export function writeFileAtomic(path: string, write: (fd: number) => void): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  let fd: number | null = null;
  try {
    fd = openSync(tmp, "wx");
    write(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
  } catch (error) {
    if (fd !== null) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // The temporary file was never created or is already gone.
    }
    throw error;
  }
}
