// Terminal output of lowbit-infer: byte sizes, aligned tables, a loading progress bar on stderr (redrawn in place
// on a terminal, one summary line otherwise) and the generation statistics line.

import type { GenerationStats } from "@lowbit/transformers";

export function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(2)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

/** Left-aligned text columns, right-aligned columns listed in `right`. */
export function table(header: readonly string[], rows: readonly (readonly string[])[], right: readonly number[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (right.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

export interface ProgressBar {
  update(done: number, total: number): void;
  /** Ends the bar: replaced by a summary line, or erased (null). */
  finish(summary: string | null): void;
}

/** A progress bar written to `stream` (stderr): redrawn with \r on a TTY, silent until finish() otherwise. */
export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr, width = 24): ProgressBar {
  const tty = stream.isTTY === true;
  let last = -1;
  return {
    update(done, total) {
      if (!tty || total <= 0) return;
      const filled = Math.round((done / total) * width);
      if (filled === last && done !== total) return; // redraw only when the bar moves
      last = filled;
      stream.write(`\r${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total}`);
    },
    finish(summary) {
      if (tty) stream.write(`\r\x1b[2K${summary === null ? "" : `${summary}\n`}`);
      else if (summary !== null) stream.write(`${summary}\n`);
    },
  };
}

/** "10 prompt tokens → 48 new · first token 12.3 ms · 210.5 tokens/s" */
export function statsLine(stats: GenerationStats): string {
  const rate = Number.isFinite(stats.decodeTokensPerSecond) ? `${stats.decodeTokensPerSecond.toFixed(1)} tokens/s (decode)` : "decode rate n/a (one token)";
  return `${stats.promptTokens} prompt tokens → ${stats.newTokens} new tokens · time to first token ${stats.timeToFirstTokenMs.toFixed(1)} ms · ${rate} · total ${stats.totalMs.toFixed(0)} ms`;
}
