// The demo `lowbit-infer` runs without arguments: on the bundled tiny-llama, the memory table (fp32 / bf16 / int8 /
// nf4), a streamed NF4 completion with its speed, and the perplexity of bf16, nf4 and int8 on a short Python snippet.

import { AutoTokenizer, comparePerplexity, formatPerplexityTable } from "@lowbit/transformers";
import type { CliOptions } from "./args.js";
import { progressBar } from "./format.js";
import { formatFootprints, measureFootprints } from "./memory.js";
import { deviceMapOf, loadModel, streamCompletion, type Output } from "./run.js";

/**
 * Python in the style of the standard library (what tiny-llama was trained on); the perplexity text. The same text
 * is packages/transformers/test/fixtures/perplexity-reference.json's, where transformers' values are recorded.
 */
export const PYTHON_SNIPPET = `import os
import sys


def main(argv=None):
    """Print the size of every file below the given folders."""
    if argv is None:
        argv = sys.argv[1:]
    for top in argv:
        for root, dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                print(path, os.path.getsize(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
`;

/** The demo's prompt: the start of a class docstring. */
export const DEMO_PROMPT = 'class Parser:\n    """';

export async function runDemo(dir: string, base: CliOptions, io: Output): Promise<void> {
  const rule = (title: string) => io.out.write(`\n== ${title} ${"=".repeat(Math.max(0, 66 - title.length))}\n`);
  io.out.write("lowbit-infer demo · tiny-llama: a 1.3 MB Llama (2 layers, hidden 128, vocab 1000) trained on Python standard-library source\n");

  rule("memory: the same checkpoint in four formats");
  io.out.write(`${formatFootprints(await measureFootprints(dir, deviceMapOf(base.device)))}\n`);

  rule("NF4 (+ double quant) completion, streamed");
  // Sampling with a fixed seed: varied text, the same on every run (greedy tiny-llama soon repeats itself).
  const nf4: CliOptions = {
    ...base,
    loadIn4bit: true,
    quantType: "nf4",
    doubleQuant: true,
    computeDtype: "bfloat16",
    prompt: DEMO_PROMPT,
    maxNewTokens: 48,
    doSample: true,
    temperature: 0.7,
    topK: 40,
    seed: 2,
  };
  io.out.write("sampling: temperature 0.7, top-k 40, seed 2, 48 new tokens\n\n");
  const tok = AutoTokenizer.fromPretrained(dir);
  const model = await loadModel(dir, nf4, io);
  try {
    const stats = await streamCompletion(model, tok, nf4, io);
    io.out.write(`${stats}\n`);
  } finally {
    model.dispose();
  }

  rule("perplexity on a Python snippet (HF sliding-window method)");
  const bar = progressBar("evaluating", io.err);
  const rows = await comparePerplexity(dir, PYTHON_SNIPPET, {
    modes: ["bf16", "nf4", "int8"],
    quantizedBaseDtype: "bfloat16",
    deviceMap: deviceMapOf(base.device),
    onProgress: (e) => bar.update(e.done, e.total),
  });
  bar.finish(null);
  io.out.write(`${formatPerplexityTable(rows)}\n`);
}
