// Streamers of transformers' generate() (generation/streamers.py, transformers 5.17; spec-hf-stack.md B8):
// generate() calls `put(promptIds)` once, then `put(newTokens)` after every step, then `end()`.
// TextStreamer re-decodes its whole token cache on each put and hands out text in the same pieces as
// transformers' `on_finalized_text`: everything up to a newline (then the cache is reset), everything when the
// last character is CJK, otherwise everything up to the last space (a partial word is held back); end() flushes.
// Positions are counted in code points, as Python's str slicing does, so astral characters split identically.

import { ArgumentError, describe } from "@lowbit/dtypes";
import type { DecodeOptions, PreTrainedTokenizer } from "../tokenizer.js";

/** What generate() feeds: rows of token ids, (B, n) — the prompt first, then (B, 1) per step. */
export interface BaseStreamer {
  put(ids: readonly (readonly number[])[]): void;
  end(): void;
}

export interface TextStreamerOptions extends DecodeOptions {
  /** Ignore the first put() (the prompt). Default false, as transformers. */
  skipPrompt?: boolean;
  /** Called with every finalized piece of text (transformers' on_finalized_text); default: write to stdout. */
  onFinalizedText?: (text: string, streamEnd: boolean) => void;
}

/** transformers' `_is_chinese_char`: the CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana). */
export function isCjkCodePoint(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/** transformers' TextStreamer (batch size 1). */
export class TextStreamer implements BaseStreamer {
  readonly tokenizer: PreTrainedTokenizer;
  readonly skipPrompt: boolean;
  readonly decodeOptions: DecodeOptions;
  readonly #onText: (text: string, streamEnd: boolean) => void;
  #tokenCache: number[] = [];
  /** Code points of the decoded cache already handed out. */
  #printLen = 0;
  #nextTokensArePrompt = true;

  constructor(tokenizer: PreTrainedTokenizer, options: TextStreamerOptions = {}) {
    if (tokenizer === null || typeof tokenizer !== "object" || typeof tokenizer.decode !== "function") {
      throw new ArgumentError(`Expected a tokenizer for tokenizer but received ${describe(tokenizer)}`);
    }
    const { skipPrompt = false, onFinalizedText, ...decodeOptions } = options;
    if (typeof skipPrompt !== "boolean") throw new ArgumentError(`Expected a boolean for skipPrompt but received ${describe(skipPrompt)}`);
    if (onFinalizedText !== undefined && typeof onFinalizedText !== "function") {
      throw new ArgumentError(`Expected a function for onFinalizedText but received ${describe(onFinalizedText)}`);
    }
    this.tokenizer = tokenizer;
    this.skipPrompt = skipPrompt;
    this.decodeOptions = decodeOptions;
    this.#onText = onFinalizedText ?? ((text, end) => process.stdout.write(end ? `${text}\n` : text));
  }

  put(ids: readonly (readonly number[])[]): void {
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((r) => Array.isArray(r))) {
      throw new ArgumentError(`Expected rows of token ids (B, n) for ids but received ${describe(ids)}`);
    }
    if (ids.length > 1) throw new ArgumentError(`TextStreamer only supports batch size 1, but received ${ids.length} rows`);
    if (this.skipPrompt && this.#nextTokensArePrompt) {
      this.#nextTokensArePrompt = false;
      return;
    }
    this.#nextTokensArePrompt = false;
    this.#tokenCache.push(...(ids[0] as readonly number[]));
    const text = Array.from(this.tokenizer.decode(this.#tokenCache, this.decodeOptions));
    let printable: string;
    const lastCp = text.length > 0 ? (text[text.length - 1] as string).codePointAt(0)! : -1;
    if (text.length > 0 && text[text.length - 1] === "\n") {
      // After a newline the cache is flushed.
      printable = text.slice(this.#printLen).join("");
      this.#tokenCache = [];
      this.#printLen = 0;
    } else if (text.length > 0 && isCjkCodePoint(lastCp)) {
      const piece = text.slice(this.#printLen);
      printable = piece.join("");
      this.#printLen += piece.length;
    } else {
      // Up to the last space: a partial word may still change with the next token. Python's
      // text[print_len : rfind(" ") + 1] is empty when the space lies before print_len.
      const cut = text.lastIndexOf(" ") + 1;
      const piece = cut > this.#printLen ? text.slice(this.#printLen, cut) : [];
      printable = piece.join("");
      this.#printLen += piece.length;
    }
    this.#onText(printable, false);
  }

  end(): void {
    let printable = "";
    if (this.#tokenCache.length > 0) {
      const text = Array.from(this.tokenizer.decode(this.#tokenCache, this.decodeOptions));
      printable = text.slice(this.#printLen).join("");
      this.#tokenCache = [];
      this.#printLen = 0;
    }
    this.#nextTokensArePrompt = true;
    this.#onText(printable, true);
  }
}

/**
 * TextStreamer whose pieces go to a queue that can be read with `for await` (transformers'
 * TextIteratorStreamer / AsyncTextIteratorStreamer). Empty pieces are queued too, as in transformers.
 */
export class TextIteratorStreamer extends TextStreamer implements AsyncIterable<string> {
  readonly #queue: string[] = [];
  #ended = false;
  #waiter: (() => void) | null = null;

  constructor(tokenizer: PreTrainedTokenizer, options: Omit<TextStreamerOptions, "onFinalizedText"> = {}) {
    const self: { push?: (text: string, end: boolean) => void } = {};
    super(tokenizer, { ...options, onFinalizedText: (text, end) => self.push?.(text, end) });
    self.push = (text, end) => {
      this.#queue.push(text);
      if (end) this.#ended = true;
      const w = this.#waiter;
      this.#waiter = null;
      w?.();
    };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (;;) {
      while (this.#queue.length > 0) yield this.#queue.shift() as string;
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }
}
