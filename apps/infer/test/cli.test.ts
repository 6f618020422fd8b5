// lowbit-infer end to end: spawns the built CLI (dist/cli.js; turbo builds it before the tests) with --max-new-tokens 4,
// compares its text with generate() run in-process, runs the demo, checks seeds through the CLI, and checks that bad
// command lines exit with code 2 and a message naming the flag.

import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, test } from "vitest";
import { AutoModelForCausalLM, AutoTokenizer, generate } from "@lowbit/transformers";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const MODEL = fileURLToPath(new URL("../models/tiny-llama/", import.meta.url));

function run(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build the app first (pnpm --filter @lowbit/infer... build, or pnpm test from the root)`);
});

describe("lowbit-infer", () => {
  test("--max-new-tokens 4 streams the prompt and the 4 tokens generate() picks, then the stats", async () => {
    const r = run("--max-new-tokens", "4", "--no-memory-table");
    expect(r.err).toMatch(/^loaded unquantized \(config dtype\) \(bfloat16\) on cpu in \d+ ms · footprint 1\.18 MiB$/m);
    expect(r.code).toBe(0);
    const tok = AutoTokenizer.fromPretrained(MODEL);
    const model = await AutoModelForCausalLM.fromPretrained(MODEL);
    const ids = tok.encode("def main():\n    ").inputIds[0]!;
    const [seq] = generate(model, ids, { maxNewTokens: 4 });
    model.dispose();
    const text = tok.decode(seq!, { skipSpecialTokens: true });
    expect(r.out.startsWith(`${text}\n`)).toBe(true);
    expect(r.out).toMatch(/10 prompt tokens → 4 new tokens · time to first token [\d.]+ ms · [\d.]+ tokens\/s \(decode\)/);
  });

  test("prints the memory table before the completion unless --no-memory-table", () => {
    const r = run("--max-new-tokens", "2", "--load-in-8bit");
    expect(r.code).toBe(0);
    const lines = r.out.split("\n");
    expect(lines[0]).toMatch(/^format\s+weights\s+get_memory_footprint\s+\+ quant state\s+vs fp32$/);
    expect(lines.slice(2, 6).map((l) => l.split(/\s+/)[0])).toEqual(["fp32", "bf16", "int8", "nf4"]);
    expect(lines[2]).toMatch(/2\.36 MiB\s+2\.36 MiB\s+1\.00×$/);
    expect(r.err).toMatch(/loaded LLM\.int8/);
  });

  test("sampling is deterministic per seed through the CLI, with 4-bit FP4 loading", () => {
    const args = ["--load-in-4bit", "--quant-type", "fp4", "--max-new-tokens", "8", "--do-sample", "--temperature", "0.9", "--no-memory-table"];
    const a = run(...args, "--seed", "3");
    const b = run(...args, "--seed", "3");
    expect(a.code).toBe(0);
    const text = (s: string) => s.split("\n\n")[0];
    expect(text(a.out)).toBe(text(b.out));
    expect(a.err).toMatch(/loaded fp4, compute float32/);
  });

  test("--chat renders the chat template", () => {
    const r = run("--chat", "list the files", "--max-new-tokens", "3", "--no-memory-table");
    expect(r.code).toBe(0);
    expect(r.out.startsWith("<|im_start|>user\nlist the files<|im_end|>\n<|im_start|>assistant\n")).toBe(true);
  });

  test("without arguments it runs the demo: memory table, NF4 completion, perplexity", () => {
    const r = run();
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/== memory: the same checkpoint in four formats/);
    expect(r.out).toMatch(/== NF4 \(\+ double quant\) completion, streamed/);
    expect(r.out).toMatch(/class Parser:\n {4}"""/);
    expect(r.out).toMatch(/11 prompt tokens → 48 new tokens/);
    const ppl = r.out.split("== perplexity")[1]!.split("\n").filter((l) => /^(bf16|nf4|int8) /.test(l));
    expect(ppl.map((l) => l.split(/\s+/)[0])).toEqual(["bf16", "nf4", "int8"]);
    for (const l of ppl) expect(Number(l.match(/\s(\d+\.\d{4})(\s|$)/)![1])).toBeGreaterThan(1);
  });

  test.each([
    [["--bogus"], /Unknown option '--bogus'/],
    [["--max-new-tokens", "abc"], /--max-new-tokens expects an integer ≥ 1 but received "abc"/],
    [["--max-new-tokens", "0"], /--max-new-tokens expects an integer ≥ 1/],
    [["--top-p", "1.5"], /--top-p expects a number ≥ 0 and ≤ 1 but received "1.5"/],
    [["--temperature", "0"], /--temperature expects a number > 0/],
    [["--load-in-4bit", "--load-in-8bit"], /--load-in-4bit and --load-in-8bit exclude each other/],
    [["--quant-type", "nf4"], /--quant-type only applies to 4-bit loading/],
    [["--load-in-4bit", "--quant-type", "int3"], /--quant-type expects one of nf4, fp4 but received "int3"/],
    [["--device", "gpu"], /--device expects cpu, cuda, cuda:N or auto/],
    [["--prompt", "a", "--chat", "b"], /--prompt and --chat exclude each other/],
    [["--model", "/nonexistent/model"], /--model expects a Hugging Face model folder/],
    [["stray"], /Unexpected argument 'stray'/],
    [["--prompt"], /--prompt/],
  ])("%j exits with code 2", (args, message) => {
    const r = run(...(args as string[]));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
    expect(r.err).toMatch(/Run lowbit-infer --help for the options\./);
    expect(r.out).toBe("");
  });

  test("--help prints the usage and exits 0", () => {
    const r = run("--help");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Usage: lowbit-infer \[options\]/);
    expect(r.out).toMatch(/--load-in-4bit/);
  });
});
