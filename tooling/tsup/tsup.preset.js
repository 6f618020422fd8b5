// The one tsup preset every lowbit package uses: ESM, ES2022, declarations, source maps.
// Switching bundlers (e.g. to tsdown) is a change to this file only.
import { defineConfig } from "tsup";

/**
 * @param {{ entry?: string[] | Record<string, string>, external?: string[], platform?: "node" | "neutral" | "browser" }} [options]
 */
export function lowbitPreset(options = {}) {
  return defineConfig({
    entry: options.entry ?? ["src/index.ts"],
    format: ["esm"],
    target: "es2022",
    platform: options.platform ?? "node",
    dts: true,
    sourcemap: true,
    clean: true,
    treeshake: true,
    splitting: false,
    external: options.external ?? [],
  });
}
