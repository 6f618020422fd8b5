#!/usr/bin/env node
// lowbit-infer: the command-line entry point. Parses the flags (exit 2 on a bad command line), then runs the demo
// (no arguments) or one inference run; any other failure prints its message and exits 1.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { USAGE, UsageError, ignoredSamplingFlags, parseCli } from "./args.js";
import { runDemo } from "./demo.js";
import { formatFootprints, measureFootprints } from "./memory.js";
import { checkModelDir, deviceMapOf, runInference, type Output } from "./run.js";

/** The bundled model, next to dist/ (or src/) in this package. */
const BUNDLED_MODEL = fileURLToPath(new URL("../models/tiny-llama/", import.meta.url));

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

async function main(argv: readonly string[], io: Output = { out: process.stdout, err: process.stderr }): Promise<number> {
  try {
    const o = parseCli(argv);
    if (o.help) {
      io.out.write(USAGE);
      return 0;
    }
    if (o.version) {
      io.out.write(`lowbit-infer ${version()}\n`);
      return 0;
    }
    const dir = checkModelDir(o.model ?? BUNDLED_MODEL);
    for (const flag of ignoredSamplingFlags(o)) io.err.write(`warning: ${flag} has no effect without --do-sample (greedy decoding), as in transformers\n`);
    if (o.demo) {
      await runDemo(dir, o, io);
      return 0;
    }
    if (o.memoryTable) io.out.write(`${formatFootprints(await measureFootprints(dir, deviceMapOf(o.device)))}\n\n`);
    await runInference(dir, o, io);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.err.write(`lowbit-infer: ${err.message}\nRun lowbit-infer --help for the options.\n`);
      return err.exitCode;
    }
    const e = err as Error;
    io.err.write(`lowbit-infer: ${e?.message ?? String(err)}\n`);
    if (process.env["LOWBIT_DEBUG"]) io.err.write(`${e?.stack ?? ""}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
