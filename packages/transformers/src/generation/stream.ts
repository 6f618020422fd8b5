// generateStream(): generate() as an async iterator of text pieces, cut exactly where transformers' TextStreamer
// cuts them (whole words, a flush at every newline, CJK characters at once; see ./streamers.ts). The decoding runs
// one step per iteration and yields to the event loop between steps, so a consumer can print, time or stop it.

import { ArgumentError, describe } from "@lowbit/dtypes";
import type { DecodeOptions, PreTrainedTokenizer } from "../tokenizer.js";
import { generateSteps, type GenerateOptions, type GenerateOutput, type GenerationStats } from "./generate.js";
import { TextStreamer, type BaseStreamer } from "./streamers.js";
import type { CausalLM, GenerationCache } from "./types.js";

export interface GenerateStreamOptions extends Omit<GenerateOptions, "tokenizer">, DecodeOptions {
  /** Decodes the tokens into text (and matches stop strings). */
  tokenizer: PreTrainedTokenizer;
  /** Leave the prompt out of the stream. Default false, as transformers' streamers. */
  skipPrompt?: boolean;
}

/**
 * A running generation: iterate it (once) with `for await` to receive the text pieces; afterwards `sequences` and
 * `stats` hold the token ids (prompt + new) and the timing. Breaking out of the loop stops the generation and frees
 * its cache.
 */
export class GenerationStream implements AsyncIterable<string> {
  #output: GenerateOutput | null = null;
  #started = false;
  readonly #steps: Generator<unknown, GenerateOutput, void>;
  readonly #pending: string[];

  /** @internal Made by generateStream(): `pending` receives the streamer's text pieces as `steps` runs. */
  constructor(steps: Generator<unknown, GenerateOutput, void>, pending: string[]) {
    this.#steps = steps;
    this.#pending = pending;
  }

  /** The final sequences (B, T); throws until the iteration has finished. */
  get sequences(): number[][] {
    return this.#done("sequences").sequences;
  }

  /** Timing of the finished generation. */
  get stats(): GenerationStats {
    return this.#done("stats").stats;
  }

  #done(what: string): GenerateOutput {
    if (this.#output === null) throw new ArgumentError(`GenerationStream.${what} is only available once the stream has been iterated to its end`);
    return this.#output;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    if (this.#started) throw new ArgumentError("A GenerationStream can be iterated only once");
    this.#started = true;
    const pending = this.#pending;
    try {
      for (;;) {
        const r = this.#steps.next();
        while (pending.length > 0) yield pending.shift() as string;
        if (r.done) {
          this.#output = r.value;
          return;
        }
        await new Promise<void>((resolve) => setImmediate(resolve)); // let timers and I/O run between steps
      }
    } finally {
      this.#steps.return(undefined as never); // frees the cache when the consumer stopped early
    }
  }
}

/** Forwards every call to several streamers. */
function fanOut(streamers: readonly BaseStreamer[]): BaseStreamer {
  return {
    put: (ids) => streamers.forEach((s) => s.put(ids)),
    end: () => streamers.forEach((s) => s.end()),
  };
}

/**
 * Streams the continuation of one prompt as text. Pieces are the non-empty texts transformers' TextStreamer would
 * hand to `on_finalized_text` (it also emits empty ones, which are dropped here).
 *
 * @example
 * const ids = tokenizer.encode("def main():").inputIds[0]!;
 * const stream = generateStream(model, ids, { tokenizer, skipPrompt: true, maxNewTokens: 32 });
 * for await (const text of stream) process.stdout.write(text);
 * console.log(stream.stats.decodeTokensPerSecond);
 */
export function generateStream<C extends GenerationCache>(model: CausalLM<C>, inputIds: readonly number[] | readonly (readonly number[])[], options: GenerateStreamOptions): GenerationStream {
  if (options === null || typeof options !== "object") throw new ArgumentError(`Expected an options object with a tokenizer for options but received ${describe(options)}`);
  const { tokenizer, skipPrompt = false, skipSpecialTokens, cleanUpTokenizationSpaces, streamer, ...rest } = options;
  if (tokenizer === undefined || tokenizer === null || typeof tokenizer.decode !== "function") {
    throw new ArgumentError(`Expected the model's tokenizer for options.tokenizer but received ${describe(tokenizer)}`);
  }
  if (Array.isArray(inputIds[0]) && inputIds.length !== 1) {
    throw new ArgumentError(`Expected one prompt for inputIds (streaming decodes a single sequence, as TextStreamer) but received ${inputIds.length} rows`);
  }
  if (rest.numReturnSequences !== undefined && rest.numReturnSequences !== null && rest.numReturnSequences !== 1) {
    throw new ArgumentError(`Expected numReturnSequences = 1 when streaming but received ${describe(rest.numReturnSequences)}`);
  }
  const decode: DecodeOptions = {};
  if (skipSpecialTokens !== undefined) decode.skipSpecialTokens = skipSpecialTokens;
  if (cleanUpTokenizationSpaces !== undefined) decode.cleanUpTokenizationSpaces = cleanUpTokenizationSpaces;
  const pending: string[] = [];
  const text = new TextStreamer(tokenizer, {
    ...decode,
    skipPrompt,
    onFinalizedText: (t) => {
      if (t.length > 0) pending.push(t);
    },
  });
  const steps = generateSteps(model, inputIds, { ...rest, tokenizer, streamer: streamer === undefined ? text : fanOut([text, streamer]) });
  return new GenerationStream(steps, pending);
}
