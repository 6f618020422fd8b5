// Stopping criteria: StopStringCriteria against transformers 5.17 on every prefix of tokenized texts
// (test/fixtures/stop-strings-reference.json) for a byte-fallback and a byte-level tokenizer, plus EOS, max length,
// max time and the argument checks.

import { describe, expect, test } from "vitest";
import {
  AutoTokenizer,
  EosTokenCriteria,
  MaxLengthCriteria,
  MaxTimeCriteria,
  StopStringCriteria,
  stopStringMatchingMode,
  type PreTrainedTokenizer,
} from "../src/index.js";
import { localFixture, readJson, repoFixture } from "./helpers.js";

interface StopCase {
  tokenizer: string;
  text: string;
  stop_strings: string[];
  ids: number[];
  done: boolean[];
  mode: "byte_level" | "byte_fallback" | null;
}

const reference = readJson<{ cases: StopCase[] }>(localFixture("stop-strings-reference.json"));
const tokenizers = new Map<string, PreTrainedTokenizer>();
const tokenizer = (name: string) => {
  let t = tokenizers.get(name);
  if (t === undefined) tokenizers.set(name, (t = AutoTokenizer.fromPretrained(repoFixture(name))));
  return t;
};

describe("StopStringCriteria matches transformers on every prefix", () => {
  test.each(reference.cases.map((c) => [c.tokenizer, JSON.stringify(c.stop_strings), JSON.stringify(c.text.slice(0, 24)), c] as const))(
    "%s %s in %s",
    (name, _s, _t, c) => {
      const crit = new StopStringCriteria(tokenizer(name), c.stop_strings);
      expect(crit.matchingMode).toBe(c.mode);
      const got = c.ids.map((_, n) => crit.isDone([c.ids.slice(0, n + 1)])[0]);
      expect(got).toEqual(c.done);
    },
  );

  test("the fixture exercises matches, including overhangs and multi-byte characters", () => {
    expect(reference.cases.filter((c) => c.done.some(Boolean)).length).toBeGreaterThan(10);
    expect(reference.cases.some((c) => c.stop_strings.includes("世界") && c.done.some(Boolean))).toBe(true);
  });
});

describe("StopStringCriteria, hand-built cases", () => {
  const tok = tokenizer("tiny-llama");
  const ids = (text: string) => tok.encode(text, { addSpecialTokens: false }).inputIds[0]!;

  test("matches only when the stop string overlaps the last token", () => {
    const crit = new StopStringCriteria(tok, ["return"]);
    const seq = ids("    return x");
    const done = seq.map((_, n) => crit.isDone([seq.slice(0, n + 1)])[0]);
    const text = (n: number) => tok.decode(seq.slice(0, n + 1));
    const first = done.indexOf(true);
    expect(first).toBeGreaterThan(0);
    expect(text(first)).toContain("return");
    expect(text(first - 1)).not.toContain("return");
    expect(done[done.length - 1]).toBe(false); // " x" follows: the string no longer overlaps the final token
  });

  test("rows are judged independently; a single string is accepted", () => {
    const crit = new StopStringCriteria(tok, "def");
    expect(crit.isDone([ids("x = 1"), ids("def"), []])).toEqual([false, true, false]);
  });

  test("the matching mode comes from tokenizer.json's decoder", () => {
    expect(stopStringMatchingMode({ type: "ByteLevel" })).toBe("byte_level");
    expect(stopStringMatchingMode({ type: "Sequence", decoders: [{ type: "Replace" }, { type: "ByteFallback" }] })).toBe("byte_fallback");
    expect(stopStringMatchingMode({ type: "WordPiece" })).toBe(null);
    expect(stopStringMatchingMode(null)).toBe(null);
  });

  test("bad arguments", () => {
    expect(() => new StopStringCriteria(tok, [])).toThrowError(/stopStrings/);
    expect(() => new StopStringCriteria(tok, [""])).toThrowError(/stopStrings/);
    expect(() => new StopStringCriteria(null as never, ["x"])).toThrowError(/tokenizer/);
  });
});

describe("EOS, max length, max time", () => {
  test("EosTokenCriteria looks at the last token only", () => {
    const c = new EosTokenCriteria([2, 7]);
    expect(c.isDone([[1, 2], [2, 1], [7], []])).toEqual([true, false, true, false]);
    expect(() => new EosTokenCriteria([])).toThrowError(/eosTokenIds/);
  });

  test("MaxLengthCriteria counts the prompt", () => {
    expect(new MaxLengthCriteria(3).isDone([[1, 2], [1, 2, 3]])).toEqual([false, true]);
    expect(() => new MaxLengthCriteria(0)).toThrowError(/maxLength/);
  });

  test("MaxTimeCriteria measures from its start", () => {
    expect(new MaxTimeCriteria(10).isDone([[1]])).toEqual([false]);
    expect(new MaxTimeCriteria(0.001, performance.now() - 5).isDone([[1], [2]])).toEqual([true, true]);
  });
});
