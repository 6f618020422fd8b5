import type { Options } from "tsup";

export function lowbitPreset(options?: {
  entry?: string[] | Record<string, string>;
  external?: string[];
  platform?: "node" | "neutral" | "browser";
}): Options | Options[] | ((overrideOptions: Options) => Options | Options[] | Promise<Options | Options[]>);
