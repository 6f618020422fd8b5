// Tests for AutoTokenizer against transformers 5.17: every case of both fixture tokenizers' tokenizer_cases.json,
// tiny-llama's expected.json prompts and padded batch, and test/fixtures/tokenizer-reference.json (chat templates,
// padding / truncation, special tokens, tokens added from tokenizer_config.json).

import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ArgumentError } from "@lowbit/dtypes";
import { AutoTokenizer, ChatTemplateError, ConfigError, PreTrainedTokenizer, type ChatMessage, type EncodeOptions } from "../src/index.js";
import { localFixture, readJson, repoFixture, withTempDir } from "./helpers.js";

interface TokCase {
  text: string;
  ids: number[];
  ids_no_special: number[];
  decoded: string;
  decoded_with_special: string;
}
interface BatchRef {
  texts: string[];
  padding: "longest" | "max_length";
  padding_side: "left" | "right";
  max_length?: number;
  truncation?: boolean;
  input_ids: number[][];
  attention_mask: number[][];
}
interface TokRef {
  class: string;
  padding_side: string;
  bos_token: string | null;
  bos_token_id: number | null;
  eos_token: string | null;
  eos_token_id: number | null;
  unk_token: string | null;
  unk_token_id: number | null;
  pad_token: string | null;
  pad_token_id: number | null;
  all_special_tokens: string[];
  all_special_ids: number[];
  chat: Record<string, { messages: ChatMessage[]; add_generation_prompt: boolean; text: string; ids: number[] }>;
  batches: Record<string, BatchRef>;
}
const REF = readJson<{ cases: Record<string, unknown> }>(localFixture("tokenizer-reference.json")).cases;
const FIXTURES = [
  { dir: "tiny-llama", key: "spm" },
  { dir: "tok-bytelevel", key: "bytelevel" },
] as const;

describe.each(FIXTURES)("$dir reproduces every tokenizer_cases.json case", ({ dir, key }) => {
  const tok = AutoTokenizer.fromPretrained(repoFixture(dir));
  const file = readJson<Record<string, { cases: TokCase[]; chat_prompt: string }>>(repoFixture(`${dir}/tokenizer_cases.json`))[key];
  const cases = file?.cases ?? [];

  it("has cases", () => {
    expect(cases.length).toBe(10);
  });

  it.each(cases.map((c) => [JSON.stringify(c.text), c] as const))("%s", (_, c) => {
    expect(tok.encode(c.text).inputIds).toEqual([c.ids]);
    expect(tok.encode(c.text, { addSpecialTokens: false }).inputIds).toEqual([c.ids_no_special]);
    expect(tok.decode(c.ids, { skipSpecialTokens: true })).toBe(c.decoded);
    expect(tok.decode(c.ids)).toBe(c.decoded_with_special);
  });

  it("renders the chat prompt", () => {
    const prompt = tok.applyChatTemplate([{ role: "user", content: "What is 2+2?" }], { addGenerationPrompt: true, tokenize: false });
    expect(prompt).toBe(file?.chat_prompt);
  });
});

describe.each(FIXTURES)("$dir matches transformers' tokenizer object", ({ dir }) => {
  const tok = AutoTokenizer.fromPretrained(repoFixture(dir));
  const ref = REF[dir] as TokRef;

  it("special tokens, ids and padding side", () => {
    expect(tok.bosToken).toBe(ref.bos_token);
    expect(tok.bosTokenId).toBe(ref.bos_token_id);
    expect(tok.eosToken).toBe(ref.eos_token);
    expect(tok.eosTokenId).toBe(ref.eos_token_id);
    expect(tok.unkToken).toBe(ref.unk_token);
    expect(tok.unkTokenId).toBe(ref.unk_token_id);
    expect(tok.padToken).toBe(ref.pad_token);
    expect(tok.padTokenId).toBe(ref.pad_token_id);
    expect(tok.allSpecialTokens).toEqual(ref.all_special_tokens);
    expect(tok.allSpecialIds).toEqual(ref.all_special_ids);
    expect(tok.paddingSide).toBe(ref.padding_side);
  });

  it.each(Object.entries(ref.chat))("chat template: %s", (_, c) => {
    expect(tok.applyChatTemplate(c.messages, { addGenerationPrompt: c.add_generation_prompt, tokenize: false })).toBe(c.text);
    expect(tok.applyChatTemplate(c.messages, { addGenerationPrompt: c.add_generation_prompt })).toEqual(c.ids);
  });

  it.each(Object.entries(ref.batches))("batch: %s (pad = eos)", (_, b) => {
    const options: EncodeOptions = { padding: b.padding, paddingSide: b.padding_side };
    if (b.max_length !== undefined) options.maxLength = b.max_length;
    if (b.truncation !== undefined) options.truncation = b.truncation;
    const enc = tok.encode(b.texts, options);
    expect(enc.inputIds).toEqual(b.input_ids);
    expect(enc.attentionMask).toEqual(b.attention_mask);
  });
});

describe("tiny-llama against expected.json", () => {
  const tok = AutoTokenizer.fromPretrained(repoFixture("tiny-llama"));
  const expected = readJson<{ prompts: string[]; input_ids: number[][]; batch_input_ids: number[][]; batch_attention_mask: number[][]; greedy_ids: number[][]; greedy_text: string[] }>(
    repoFixture("tiny-llama/expected.json"),
  );

  it("tokenizes the prompts with BOS", () => {
    expect(tok.encode(expected.prompts).inputIds).toEqual(expected.input_ids);
  });

  it("left-pads the first three prompts with pad = eos (the tokenizer's default side)", () => {
    const enc = tok.encode(expected.prompts.slice(0, 3), { padding: true });
    expect(enc.inputIds).toEqual(expected.batch_input_ids);
    expect(enc.attentionMask).toEqual(expected.batch_attention_mask);
  });

  it("decodes prompt + greedy continuation to greedy_text", () => {
    const texts = tok.batchDecode(
      expected.input_ids.map((ids, i) => [...ids, ...(expected.greedy_ids[i] ?? [])]),
      { skipSpecialTokens: true },
    );
    expect(texts).toEqual(expected.greedy_text);
  });

  it("the pre-quantized checkpoints carry the same tokenizer", () => {
    for (const dir of ["tiny-llama-bnb-nf4", "tiny-llama-bnb-int8"]) {
      expect(AutoTokenizer.fromPretrained(repoFixture(dir)).encode(expected.prompts).inputIds).toEqual(expected.input_ids);
    }
  });
});

/** A copy of tiny-llama's tokenizer files in a temp folder, with `edit` applied to tokenizer_config.json. */
function withTinyLlamaCopy<T>(edit: (config: Record<string, unknown>) => void, fn: (dir: string) => T, options: { jinja?: boolean } = {}): T {
  return withTempDir((dir) => {
    copyFileSync(repoFixture("tiny-llama/tokenizer.json"), join(dir, "tokenizer.json"));
    if (options.jinja === true) copyFileSync(repoFixture("tiny-llama/chat_template.jinja"), join(dir, "chat_template.jinja"));
    const config = readJson<Record<string, unknown>>(repoFixture("tiny-llama/tokenizer_config.json"));
    edit(config);
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
    return fn(dir);
  });
}

describe("tokenizer_config.json handling", () => {
  it("renders a tokenizer_config.json chat_template (Llama-2 style, tojson, strip, loop, slicing) as transformers does", () => {
    const ref = REF["config-template"] as { chat_template: string; renders: Record<string, { messages: ChatMessage[]; text: string }> };
    withTinyLlamaCopy(
      (c) => {
        c["chat_template"] = ref.chat_template;
      },
      (dir) => {
        const tok = AutoTokenizer.fromPretrained(dir);
        for (const r of Object.values(ref.renders)) expect(tok.applyChatTemplate(r.messages, { addGenerationPrompt: true, tokenize: false })).toBe(r.text);
        expect(() => tok.applyChatTemplate([{ role: "assistant", content: "x" }], { tokenize: false })).toThrowError(ChatTemplateError);
        expect(() => tok.applyChatTemplate([{ role: "assistant", content: "x" }], { tokenize: false })).toThrow(/Conversation roles must alternate/);
      },
    );
  });

  it("chat_template.jinja wins over tokenizer_config.json's chat_template", () => {
    withTinyLlamaCopy(
      (c) => {
        c["chat_template"] = "CONFIG TEMPLATE";
      },
      (dir) => {
        const tok = AutoTokenizer.fromPretrained(dir);
        expect(tok.applyChatTemplate([{ role: "user", content: "hi" }], { tokenize: false })).toBe("<|im_start|>user\nhi<|im_end|>\n");
      },
      { jinja: true },
    );
  });

  it("named templates: additional_chat_templates/*.jinja, the list form, and choosing by name", () => {
    withTinyLlamaCopy(
      () => {},
      (dir) => {
        mkdirSync(join(dir, "additional_chat_templates"));
        writeFileSync(join(dir, "additional_chat_templates", "tool_use.jinja"), "TOOLS {{ tools | length }}");
        writeFileSync(join(dir, "additional_chat_templates", "plain.jinja"), "PLAIN {{ messages | length }}");
        const tok = AutoTokenizer.fromPretrained(dir);
        expect(typeof tok.chatTemplate).toBe("object");
        const msgs = [{ role: "user", content: "hi" }];
        expect(tok.applyChatTemplate(msgs, { tokenize: false })).toBe("<|im_start|>user\nhi<|im_end|>\n");
        expect(tok.applyChatTemplate(msgs, { tokenize: false, tools: [{ name: "f" }, { name: "g" }] })).toBe("TOOLS 2");
        expect(tok.applyChatTemplate(msgs, { tokenize: false, chatTemplate: "plain" })).toBe("PLAIN 1");
        expect(tok.applyChatTemplate(msgs, { tokenize: false, chatTemplate: "{{ 'inline' }}" })).toBe("inline");
      },
      { jinja: true },
    );
    withTinyLlamaCopy(
      (c) => {
        c["chat_template"] = [
          { name: "default", template: "D{{ messages[0].content }}" },
          { name: "rag", template: "R{{ documents | length }}" },
        ];
      },
      (dir) => {
        const tok = AutoTokenizer.fromPretrained(dir);
        expect(tok.applyChatTemplate([{ role: "user", content: "x" }], { tokenize: false })).toBe("Dx");
        expect(tok.applyChatTemplate([{ role: "user", content: "x" }], { tokenize: false, chatTemplate: "rag", documents: [{ title: "t", text: "u" }] })).toBe("R1");
      },
    );
  });

  it("ignores add_bos_token / add_eos_token when tokenizer.json exists (transformers 5 pops them)", () => {
    const ref = REF["add-bos-eos"] as { text: string; bos_and_eos: number[]; no_bos: number[] };
    for (const [edit, expected] of [
      [{ add_bos_token: true, add_eos_token: true }, ref.bos_and_eos],
      [{ add_bos_token: false }, ref.no_bos],
    ] as const) {
      withTinyLlamaCopy(
        (c) => Object.assign(c, edit),
        (dir) => expect(AutoTokenizer.fromPretrained(dir).encode(ref.text).inputIds).toEqual([expected]),
      );
    }
  });

  it("adds special tokens that tokenizer.json lacks, with the ids transformers gives them", () => {
    const ref = REF["added-special"] as {
      tokenizer_config: Record<string, unknown>;
      text: string;
      ids: number[];
      length: number;
      pad_token: string;
      pad_token_id: number;
      all_special_tokens: string[];
      all_special_ids: number[];
      decoded: string;
      decoded_with_special: string;
    };
    withTinyLlamaCopy(
      (c) => {
        for (const k of Object.keys(c)) delete c[k];
        Object.assign(c, ref.tokenizer_config);
      },
      (dir) => {
        const tok = AutoTokenizer.fromPretrained(dir);
        expect(tok.encode(ref.text).inputIds).toEqual([ref.ids]);
        expect(tok.length).toBe(ref.length);
        expect(tok.vocabSize).toBe(1000);
        expect(tok.padToken).toBe(ref.pad_token);
        expect(tok.padTokenId).toBe(ref.pad_token_id);
        expect(tok.allSpecialTokens).toEqual(ref.all_special_tokens);
        expect(tok.allSpecialIds).toEqual(ref.all_special_ids);
        expect(tok.decode(ref.ids, { skipSpecialTokens: true })).toBe(ref.decoded);
        expect(tok.decode(ref.ids)).toBe(ref.decoded_with_special);
      },
    );
  });
});

describe("tokenizer behaviour and errors", () => {
  const tok = AutoTokenizer.fromPretrained(repoFixture("tiny-llama"));
  const bl = AutoTokenizer.fromPretrained(repoFixture("tok-bytelevel"));

  it("decode skips ids outside the vocabulary and returns '' for none, like transformers", () => {
    expect(tok.decode([5000, 1, 2, 999999])).toBe("<s></s>");
    expect(bl.decode([5000, 1, 2, 999999])).toBe("<|end_of_text|><|im_start|>");
    expect(tok.decode([])).toBe("");
    expect(tok.decode(new Int32Array([899, 958, 900, 908, 328, 312, 267, 527]))).toBe("Hello world");
    expect(() => tok.decode([1, -1])).toThrowErrorMatchingInlineSnapshot(`[ArgumentError: Expected non-negative integer token ids for ids but received -1 (number) in Array(2)]`);
    expect(() => tok.decode("1" as never)).toThrowError(ArgumentError);
  });

  it("pads with the pad token once one is set, and pads to a multiple", () => {
    const t = PreTrainedTokenizer.fromPretrained(repoFixture("tiny-llama"));
    t.setPadToken("<unk>");
    expect(t.padTokenId).toBe(0);
    const enc = t.encode(["a", "Hello world"], { padding: true, padToMultipleOf: 4, paddingSide: "right" });
    expect(enc.inputIds.map((x) => x.length)).toEqual([12, 12]);
    expect(enc.inputIds[0]?.slice(-3)).toEqual([0, 0, 0]);
    expect(t.encode(["a"], { padding: "max_length", maxLength: 5, padTokenId: 7 }).inputIds).toEqual([[7, 7, 7, 1, 264]]);
    expect(() => t.setPadToken("<nope>")).toThrowError(ArgumentError);
  });

  it("truncation keeps room for the special tokens and can cut on the left", () => {
    expect(tok.encode("Hello world", { truncation: true, maxLength: 3 }).inputIds).toEqual([[1, 899, 958]]);
    expect(tok.encode("Hello world", { truncation: true, maxLength: 3, truncationSide: "left" }).inputIds).toEqual([[1, 267, 527]]);
    expect(tok.encode("Hello world", { truncation: true, maxLength: 3, addSpecialTokens: false }).inputIds).toEqual([[899, 958, 900]]);
    expect(() => tok.encode("x", { truncation: true, maxLength: 0 })).toThrow(/positive integer for maxLength/);
  });

  it("rejects bad encode options and texts", () => {
    expect(() => tok.encode(3 as never)).toThrowErrorMatchingInlineSnapshot(`[ArgumentError: Expected a string or an array of strings for text but received 3 (number)]`);
    expect(() => tok.encode("x", { padding: "longestt" as never })).toThrow(/for padding but received "longestt"/);
    expect(() => tok.encode("x", { padding: "max_length" })).toThrow(/maxLength to be set/);
    expect(() => tok.encode("x", { paddingSide: "up" as never })).toThrow(/paddingSide/);
  });

  it("chat template errors", () => {
    expect(() => tok.applyChatTemplate([{ role: "user", content: "x" }], { addGenerationPrompt: true, continueFinalMessage: true })).toThrowError(ArgumentError);
    expect(() => tok.applyChatTemplate([{ content: "x" }] as never)).toThrow(/array of \{role, content\} messages/);
    expect(() => tok.applyChatTemplate([{ role: "user", content: "x" }], { chatTemplate: "{% for %}" })).toThrowError(ChatTemplateError);
    withTinyLlamaCopy(
      () => {},
      (dir) => expect(() => AutoTokenizer.fromPretrained(dir).applyChatTemplate([{ role: "user", content: "x" }])).toThrow(/has no chat template/),
    );
  });

  it("continueFinalMessage leaves the final message open", () => {
    const msgs = [
      { role: "user", content: "hi" },
      { role: "assistant", content: "Hello, I am" },
    ];
    expect(tok.applyChatTemplate(msgs, { continueFinalMessage: true, tokenize: false })).toBe("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nHello, I am");
  });

  it("missing or malformed tokenizer files", () => {
    withTempDir((dir) => {
      expect(() => AutoTokenizer.fromPretrained(dir)).toThrowError(ConfigError);
      expect(() => AutoTokenizer.fromPretrained(dir)).toThrow(/tokenizer\.json: is missing/);
      writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({ model: { type: "BPE", vocab: {}, merges: [] }, added_tokens: [{ id: -1, content: "x" }] }));
      expect(() => AutoTokenizer.fromPretrained(dir)).toThrow(/added_tokens\[0\]: expected \{id, content, \.\.\.\}/);
      writeFileSync(join(dir, "tokenizer.json"), "[]");
      expect(() => AutoTokenizer.fromPretrained(dir)).toThrow(/must hold a JSON object/);
    });
    withTinyLlamaCopy(
      (c) => {
        c["bos_token"] = 5;
      },
      (dir) => expect(() => AutoTokenizer.fromPretrained(dir)).toThrow(/tokenizer_config\.json, bos_token: expected a token string or an AddedToken object/),
    );
  });
});
