// Finds and loads lowbit_kernels.node: an explicit `nativeBinding` (a path or an already-loaded addon,
// as better-sqlite3 allows), else $LOWBIT_KERNELS_PATH, else the local build in build/Release. On failure
// it throws ONE KernelsLoadError listing every candidate tried and the command that fixes it.
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { describe } from "@lowbit/dtypes";

import type { Binding } from "./binding.js";
import { ArgumentError, KernelsLoadError } from "./errors.js";

export interface LoadKernelsOptions {
  /**
   * A path to a `lowbit_kernels.node` (relative paths resolve against the working directory), or an
   * addon object that was already loaded (for bundlers and custom builds). When given, nothing else
   * is tried.
   */
  nativeBinding?: string | Binding;
}

/** The command that builds the addon in this repository. */
export const BUILD_COMMAND = "pnpm --filter @lowbit/kernels build";

const require = createRequire(import.meta.url);
// src/loader.ts (tests read source) and dist/index.js (the bundle) both sit one level below the package.
const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** Where `scripts/build-native.mjs` writes the addon. */
export const LOCAL_BUILD_PATH = resolve(packageDir, "build", "Release", "lowbit_kernels.node");

const REQUIRED_EXPORTS = ["initialize", "allocate", "cast", "copyStrided", "memoryStats"] as const;

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n")[0] ?? message;
}

/** Throws unless `value` looks like this package's addon (a different .node would crash later instead). */
function checkBinding(value: unknown, source: string): Binding {
  if (typeof value !== "object" || value === null) {
    throw new Error(`${source} did not export an object (received ${describe(value)})`);
  }
  const missing = REQUIRED_EXPORTS.filter((name) => typeof (value as Record<string, unknown>)[name] !== "function");
  if (missing.length > 0) throw new Error(`${source} is not a @lowbit/kernels addon (missing ${missing.join(", ")})`);
  return value as Binding;
}

/**
 * Loads the native addon (without initializing it; see getBinding in index.ts).
 * @throws {KernelsLoadError} when no candidate loads; the message lists each and how to fix it.
 * @throws {ArgumentError} when `nativeBinding` is neither a string nor an object.
 */
export function loadAddon(options: LoadKernelsOptions = {}): { binding: Binding; source: string } {
  const { nativeBinding } = options;
  if (nativeBinding !== undefined && typeof nativeBinding !== "string" && (typeof nativeBinding !== "object" || nativeBinding === null)) {
    throw new ArgumentError(`Expected a path or a loaded addon object for nativeBinding but received ${describe(nativeBinding)}`);
  }
  if (typeof nativeBinding === "object") {
    return { binding: checkBinding(nativeBinding, "options.nativeBinding"), source: "options.nativeBinding (object)" };
  }

  const candidates: { path: string; origin: string }[] = [];
  const envPath = process.env.LOWBIT_KERNELS_PATH;
  if (nativeBinding !== undefined) candidates.push({ path: resolve(nativeBinding), origin: "options.nativeBinding" });
  else if (envPath) candidates.push({ path: resolve(envPath), origin: "LOWBIT_KERNELS_PATH" });
  else candidates.push({ path: LOCAL_BUILD_PATH, origin: "local build" });

  const attempts: { candidate: string; error: string }[] = [];
  for (const { path, origin } of candidates) {
    try {
      return { binding: checkBinding(require(path), path), source: path };
    } catch (error) {
      attempts.push({ candidate: `${path} (${origin})`, error: firstLine(error) });
    }
  }
  const explicit = nativeBinding !== undefined || Boolean(envPath);
  const lines = [
    "Could not load the @lowbit/kernels native addon (lowbit_kernels.node).",
    "Tried:",
    ...attempts.map((a) => `  - ${a.candidate}: ${a.error}`),
    "Possible solutions:",
    `  - Build it (needs CMake >= 3.19 and a C++17 compiler): ${BUILD_COMMAND}`,
    explicit
      ? "  - Check the path given in options.nativeBinding / LOWBIT_KERNELS_PATH, or unset it to use the local build."
      : "  - Or point to a built addon: loadKernels({ nativeBinding: \"/path/to/lowbit_kernels.node\" }) or LOWBIT_KERNELS_PATH.",
  ];
  throw new KernelsLoadError(lines.join("\n"), attempts);
}
