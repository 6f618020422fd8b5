// TextStreamer / TextIteratorStreamer / generateStream: the pieces transformers' TextStreamer hands to
// on_finalized_text (test/fixtures/streamer-reference.json: prompts, one token at a time, CJK, astral characters,
// byte-fallback fragments, both tokenizers, with and without skip_prompt / skip_special_tokens), a hand-derived
// case, and generateStream on ToyCausalLM.

import { describe, expect, test } from "vitest";
import {
  AutoTokenizer,
  TextIteratorStreamer,
  TextStreamer,
  ToyCausalLM,
  generate,
  generateStream,
  isCjkCodePoint,
  type PreTrainedTokenizer,
} from "../src/index.js";
import { localFixture, readJson, repoFixture } from "./helpers.js";

interface StreamCase {
  tokenizer: string;
  text: string;
  ids: number[];
  prompt_length: number;
  skip_prompt: boolean;
  skip_special_tokens: boolean;
  calls: [string, boolean][];
  /** Every decode() the Python streamer made: JSON of the ids → the text. */
  decodes: Record<string, string>;
}

const reference = readJson<{ cases: StreamCase[] }>(localFixture("streamer-reference.json"));
const tokenizers = new Map<string, PreTrainedTokenizer>();
const tokenizer = (name: string) => {
  let t = tokenizers.get(name);
  if (t === undefined) tokenizers.set(name, (t = AutoTokenizer.fromPretrained(repoFixture(name))));
  return t;
};

function record(tok: PreTrainedTokenizer, ids: number[], promptLength: number, options: { skipPrompt: boolean; skipSpecialTokens: boolean }): [string, boolean][] {
  const calls: [string, boolean][] = [];
  const s = new TextStreamer(tok, { ...options, onFinalizedText: (text, end) => calls.push([text, end]) });
  s.put([ids.slice(0, promptLength)]);
  for (const id of ids.slice(promptLength)) s.put([[id]]);
  s.end();
  return calls;
}

/** A tokenizer whose decode() returns exactly what Python's did for the same ids (throws for any other ids). */
function pythonDecodes(c: StreamCase): PreTrainedTokenizer {
  const byIds = new Map(Object.entries(c.decodes).map(([k, text]) => [(JSON.parse(k) as number[]).join(","), text]));
  const decode = (ids: readonly number[]) => {
    const text = byIds.get(ids.join(","));
    if (text === undefined) throw new Error(`the streamer decoded ids Python's streamer never decoded: ${JSON.stringify(ids)}`);
    return text;
  };
  return { decode } as unknown as PreTrainedTokenizer;
}

/** Whether our tokenizer decodes every state the streamer saw as Python does (see the test below for the exception). */
function sameDecodes(c: StreamCase): boolean {
  const tok = tokenizer(c.tokenizer);
  return Object.entries(c.decodes).every(([ids, text]) => tok.decode(JSON.parse(ids) as number[], { skipSpecialTokens: c.skip_special_tokens }) === text);
}

const cases = reference.cases.map((c) => [c.tokenizer, JSON.stringify(c.text.slice(0, 20)), c.skip_prompt, c.skip_special_tokens, c] as const);

describe("TextStreamer reproduces transformers' on_finalized_text calls", () => {
  test.each(cases)("on Python's decoded strings: %s %s skipPrompt=%s skipSpecialTokens=%s", (_name, _t, skipPrompt, skipSpecialTokens, c) => {
    expect(record(pythonDecodes(c), c.ids, c.prompt_length, { skipPrompt, skipSpecialTokens })).toEqual(c.calls);
  });

  test.each(cases.filter(([, , , , c]) => sameDecodes(c)))("with our tokenizer: %s %s skipPrompt=%s skipSpecialTokens=%s", (name, _t, skipPrompt, skipSpecialTokens, c) => {
    expect(record(tokenizer(name), c.ids, c.prompt_length, { skipPrompt, skipSpecialTokens })).toEqual(c.calls);
  });

  test("our tokenizer decodes like Python's everywhere but on byte-fallback runs that are not valid UTF-8", () => {
    // The Rust ByteFallback decoder turns a run of <0xNN> tokens that is not valid UTF-8 (a character cut in two)
    // into one U+FFFD per byte; @huggingface/tokenizers (tokenizer.ts's engine) gives one U+FFFD per broken
    // sequence and keeps the valid characters of the run. The byte-level tokenizer is not affected. The streamer
    // itself is checked on Python's exact strings above.
    const differing = reference.cases.filter((c) => !sameDecodes(c)).map((c) => `${c.tokenizer} ${c.text.slice(0, 2)}`);
    expect([...new Set(differing)].sort()).toEqual(["tiny-llama a ", "tiny-llama 你好"]);
  });
});

describe("TextStreamer, hand-derived pieces", () => {
  test("words are held back until a space, a newline flushes, the end flushes the rest", () => {
    const tok = tokenizer("tiny-llama");
    const ids = tok.encode("ab cd\nef gh", { addSpecialTokens: false }).inputIds[0]!;
    const calls: string[] = [];
    const s = new TextStreamer(tok, { onFinalizedText: (t) => calls.push(t) });
    for (const id of ids) s.put([[id]]);
    s.end();
    // Joined, the pieces are the text; each non-final piece ends at a space or a newline.
    expect(calls.join("")).toBe(tok.decode(ids));
    for (const piece of calls.slice(0, -1).filter((p) => p.length > 0)) expect(/[ \n]$/.test(piece)).toBe(true);
    expect(calls[calls.length - 1]).toBe("gh");
  });

  test("CJK characters are emitted at once, Hangul is not CJK", () => {
    expect(isCjkCodePoint("世".codePointAt(0)!)).toBe(true);
    expect(isCjkCodePoint("𠀀".codePointAt(0)!)).toBe(true);
    expect(isCjkCodePoint("한".codePointAt(0)!)).toBe(false);
  });

  test("batch size above 1 is refused, as in transformers", () => {
    const s = new TextStreamer(tokenizer("tiny-llama"), { onFinalizedText: () => undefined });
    expect(() => s.put([[1], [2]])).toThrowError(/batch size 1/);
  });

  test("TextIteratorStreamer queues every piece, empty ones included, and ends", async () => {
    const tok = tokenizer("tok-bytelevel");
    const c = reference.cases.find((x) => x.tokenizer === "tok-bytelevel" && !x.skip_prompt && !x.skip_special_tokens)!;
    const s = new TextIteratorStreamer(tok);
    s.put([c.ids.slice(0, c.prompt_length)]);
    for (const id of c.ids.slice(c.prompt_length)) s.put([[id]]);
    s.end();
    const got: string[] = [];
    for await (const piece of s) got.push(piece);
    expect(got).toEqual(c.calls.map(([t]) => t));
  });
});

describe("generateStream", () => {
  const tok = tokenizer("tiny-llama");
  const model = new ToyCausalLM({ vocabSize: 1000, seed: 7, eosTokenIds: [2] });
  const prompt = tok.encode("def main():\n    return").inputIds[0]!;

  test("yields the non-empty TextStreamer pieces of the same generation, then exposes ids and stats", async () => {
    const ids = generate(model, prompt, { maxNewTokens: 20 })[0]!;
    const stream = generateStream(model, prompt, { tokenizer: tok, skipPrompt: true, maxNewTokens: 20 });
    const pieces: string[] = [];
    for await (const p of stream) pieces.push(p);
    expect(stream.sequences).toEqual([ids]);
    const expected = record(tok, ids, prompt.length, { skipPrompt: true, skipSpecialTokens: false }).map(([t]) => t).filter((t) => t.length > 0);
    expect(pieces).toEqual(expected);
    expect(pieces.join("")).toBe(tok.decode(ids.slice(prompt.length)));
    expect(stream.stats.newTokens).toBe(ids.length - prompt.length);
    expect(stream.stats.timeToFirstTokenMs).toBeGreaterThan(0);
    expect(stream.stats.selection).toBe("device-argmax");
  });

  test("breaking out early stops generating; the stream is single-use", async () => {
    const stream = generateStream(model, prompt, { tokenizer: tok, maxNewTokens: 50 });
    let n = 0;
    for await (const _ of stream) if (++n === 2) break;
    expect(n).toBe(2);
    expect(() => stream.sequences).toThrowError(/iterated to its end/);
    await expect(async () => {
      for await (const _ of stream) void _;
    }).rejects.toThrowError(/only once/);
  });

  test("checks its arguments before generating", () => {
    expect(() => generateStream(model, [prompt, prompt], { tokenizer: tok })).toThrowError(/one prompt/);
    expect(() => generateStream(model, prompt, { tokenizer: undefined as never })).toThrowError(/tokenizer/);
    expect(() => generateStream(model, prompt, { tokenizer: tok, numBeams: 4 })).toThrowError(/numBeams/);
  });
});
