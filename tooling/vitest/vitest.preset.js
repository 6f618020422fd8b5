// Shared vitest configuration: tests read workspace packages from source (the "@lowbit/source"
// export condition), run in forked processes (native addons must not share a thread pool across
// workers), and fail on tests that take too long to be useful in CI.
import { defineConfig } from "vitest/config";

/**
 * @param {{ testTimeout?: number, include?: string[] }} [options]
 */
export function lowbitVitest(options = {}) {
  return defineConfig({
    resolve: { conditions: ["@lowbit/source"] },
    ssr: { resolve: { conditions: ["@lowbit/source"] } },
    test: {
      include: options.include ?? ["test/**/*.test.ts", "src/**/*.test.ts"],
      pool: "forks",
      testTimeout: options.testTimeout ?? 60_000,
      reporters: ["default"],
    },
  });
}
