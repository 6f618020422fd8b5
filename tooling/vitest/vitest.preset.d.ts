import type { UserConfig } from "vitest/config";

export function lowbitVitest(options?: { testTimeout?: number; include?: string[] }): UserConfig;
