// The memory table: the checkpoint loaded once per format (fp32, bf16, int8, nf4) and measured — transformers'
// get_memory_footprint() (parameters + buffers; it leaves 4-bit absmax / quant maps and int8 SCB out) and the same
// with that quantization state counted. Measured rather than estimated, so it is exactly what a load costs; each
// model is freed before the next loads.

import { AutoModelForCausalLM, loadModeOptions, type DeviceMapOption, type PerplexityMode } from "@lowbit/transformers";
import { formatBytes, progressBar, table } from "./format.js";

export interface FootprintRow {
  mode: PerplexityMode;
  description: string;
  /** transformers' get_memory_footprint(). */
  footprintBytes: number;
  /** With the quantization state (absmax, quant maps, SCB). */
  totalBytes: number;
}

/** The table's formats: int8 keeps float16 elsewhere (LLM.int8's usual setting), nf4 keeps bfloat16 and double-quantizes. */
const TABLE_MODES: readonly { mode: PerplexityMode; base: "float32" | "bfloat16" | "float16" }[] = [
  { mode: "fp32", base: "float32" },
  { mode: "bf16", base: "bfloat16" },
  { mode: "int8", base: "float16" },
  { mode: "nf4", base: "bfloat16" },
];

export async function measureFootprints(dir: string, deviceMap: DeviceMapOption): Promise<FootprintRow[]> {
  const rows: FootprintRow[] = [];
  for (const { mode, base } of TABLE_MODES) {
    const { dtype, quantizationConfig, description } = loadModeOptions(mode, base, true);
    const bar = progressBar(`measuring ${mode}`);
    const model = await AutoModelForCausalLM.fromPretrained(dir, {
      dtype,
      quantizationConfig,
      deviceMap,
      onProgress: (p) => bar.update(p.loaded, p.total),
      onWarning: () => undefined,
    });
    try {
      rows.push({
        mode,
        description,
        footprintBytes: model.getMemoryFootprint(),
        totalBytes: model.getMemoryFootprint({ includeQuantizationState: true }),
      });
    } finally {
      model.dispose();
    }
    bar.finish(null);
  }
  return rows;
}

export function formatFootprints(rows: readonly FootprintRow[]): string {
  const base = rows[0]?.footprintBytes ?? 1;
  return table(
    ["format", "weights", "get_memory_footprint", "+ quant state", "vs fp32"],
    rows.map((r) => [r.mode, r.description, formatBytes(r.footprintBytes), formatBytes(r.totalBytes), `${(r.footprintBytes / base).toFixed(2)}×`]),
    [2, 3, 4],
  );
}
