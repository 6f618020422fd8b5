// Stopping criteria of transformers' generate() (generation/stopping_criteria.py, transformers 5.17): max length,
// max time, stop strings and EOS. Each criterion looks at every row's full sequence (prompt + generated) after a
// token was appended and says which rows are done; generate() ends a row when any criterion says so.
//
// StopStringCriteria follows transformers' semantics exactly — a stop string must overlap the final token, may
// start inside an earlier token and may end inside the final one ("overhangs"), and is matched on UTF-8 bytes for
// byte-level and byte-fallback tokenizers — but walks the last tokens directly instead of building transformers'
// vocabulary-wide embedding table; token strings are worked out (and cached) only for the ids it meets.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ArgumentError, describe } from "@lowbit/dtypes";
import { isJsonObject } from "../config-base.js";
import { TOKENIZER_FILE, type PreTrainedTokenizer } from "../tokenizer.js";

export interface StoppingCriterion {
  /** transformers' class name, e.g. "EosTokenCriteria". */
  readonly name: string;
  /** For each row (its whole sequence so far), whether it should stop. */
  isDone(sequences: readonly (readonly number[])[]): boolean[];
}

/** `MaxLengthCriteria`: every row is done once the sequences reach maxLength tokens (prompt included). */
export class MaxLengthCriteria implements StoppingCriterion {
  readonly name = "MaxLengthCriteria";
  constructor(readonly maxLength: number) {
    if (!Number.isSafeInteger(maxLength) || maxLength <= 0) throw new ArgumentError(`Expected a positive integer for maxLength but received ${describe(maxLength)}`);
  }
  isDone(sequences: readonly (readonly number[])[]): boolean[] {
    return sequences.map((s) => s.length >= this.maxLength);
  }
}

/** `MaxTimeCriteria`: every row is done once `maxTime` seconds have passed since `initialTime` (ms, performance.now()). */
export class MaxTimeCriteria implements StoppingCriterion {
  readonly name = "MaxTimeCriteria";
  readonly initialTime: number;
  constructor(
    readonly maxTime: number,
    initialTime: number = performance.now(),
  ) {
    if (typeof maxTime !== "number" || !(maxTime >= 0)) throw new ArgumentError(`Expected a non-negative number of seconds for maxTime but received ${describe(maxTime)}`);
    this.initialTime = initialTime;
  }
  isDone(sequences: readonly (readonly number[])[]): boolean[] {
    const done = (performance.now() - this.initialTime) / 1000 > this.maxTime;
    return sequences.map(() => done);
  }
}

/** `EosTokenCriteria`: a row is done when its last token is one of the eos ids. */
export class EosTokenCriteria implements StoppingCriterion {
  readonly name = "EosTokenCriteria";
  readonly eosTokenIds: ReadonlySet<number>;
  constructor(eosTokenIds: readonly number[]) {
    if (!Array.isArray(eosTokenIds) || eosTokenIds.length === 0 || !eosTokenIds.every((x) => Number.isSafeInteger(x) && x >= 0)) {
      throw new ArgumentError(`Expected a non-empty list of token ids for eosTokenIds but received ${describe(eosTokenIds)}`);
    }
    this.eosTokenIds = new Set(eosTokenIds);
  }
  isDone(sequences: readonly (readonly number[])[]): boolean[] {
    return sequences.map((s) => s.length > 0 && this.eosTokenIds.has(s[s.length - 1] as number));
  }
}

/** How tokens are compared with stop strings: UTF-8 bytes (byte-level / byte-fallback decoders) or characters. */
export type StopStringMatchingMode = "byte_level" | "byte_fallback" | null;

function hasDecoderType(node: unknown, type: string): boolean {
  if (Array.isArray(node)) return node.some((n) => hasDecoderType(n, type));
  if (isJsonObject(node)) return node["type"] === type || Object.values(node).some((v) => hasDecoderType(v, type));
  return false;
}

/** transformers' `_get_stop_string_matching_mode`, from tokenizer.json's decoder. */
export function stopStringMatchingMode(decoder: unknown): StopStringMatchingMode {
  if (!isJsonObject(decoder)) return null;
  if (decoder["type"] === "ByteLevel") return "byte_level";
  if (hasDecoderType(decoder, "ByteFallback")) return "byte_fallback";
  if (hasDecoderType(decoder, "ByteLevel")) return "byte_level";
  return null;
}

/** GPT-2's `bytes_to_unicode` inverted: the character each byte-level vocabulary symbol stands for → the byte. */
function byteLevelDecoder(): Map<string, number> {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  return new Map(bs.map((b, i) => [String.fromCodePoint(cs[i] as number), b]));
}

const UTF8 = new TextEncoder();
const STATIC_PREFIX = "abcdef";

/**
 * A token's text as the stop-string matcher sees it (transformers' `clean_tokenizer_vocab`): the bytes of a
 * byte-level symbol or of a `<0xNN>` byte-fallback token, else what the decoder makes of it after a fixed prefix
 * (so that prefix-space handling does not eat its leading space) — as UTF-8 bytes in the byte modes, as code
 * points otherwise. null for ids outside the vocabulary (they never match).
 */
class TokenTexts {
  readonly mode: StopStringMatchingMode;
  readonly #tokenizer: PreTrainedTokenizer;
  readonly #cache = new Map<number, number[] | null>();
  readonly #byteDecoder: Map<string, number> | null;
  readonly #baseIds: number[];

  constructor(tokenizer: PreTrainedTokenizer) {
    this.#tokenizer = tokenizer;
    let decoder: unknown = null;
    try {
      const json: unknown = JSON.parse(readFileSync(join(tokenizer.dir, TOKENIZER_FILE), "utf8"));
      decoder = isJsonObject(json) ? json["decoder"] : null;
    } catch (cause) {
      throw new ArgumentError(`Expected the tokenizer's folder ${tokenizer.dir} to hold a readable ${TOKENIZER_FILE} for stop strings (${(cause as Error).message})`, { cause });
    }
    this.mode = stopStringMatchingMode(decoder);
    this.#byteDecoder = this.mode === "byte_level" ? byteLevelDecoder() : null;
    this.#baseIds = tokenizer.encode(STATIC_PREFIX, { addSpecialTokens: false }).inputIds[0] ?? [];
  }

  /** A stop string in the units tokens are compared in. */
  units(text: string): number[] {
    return this.mode === null ? Array.from(text, (c) => c.codePointAt(0) as number) : Array.from(UTF8.encode(text));
  }

  get(id: number): number[] | null {
    let t = this.#cache.get(id);
    if (t === undefined) {
      t = this.#compute(id);
      this.#cache.set(id, t);
    }
    return t;
  }

  #compute(id: number): number[] | null {
    const token = this.#tokenizer.convertIdToToken(id);
    if (token === null) return null;
    if (this.mode === "byte_level" && this.#byteDecoder !== null) {
      const chars = Array.from(token);
      if (chars.every((c) => this.#byteDecoder!.has(c))) return chars.map((c) => this.#byteDecoder!.get(c) as number);
    }
    if (this.mode === "byte_fallback" && /^<0x[0-9a-fA-F]{2}>$/.test(token)) return [parseInt(token.slice(3, 5), 16)];
    const text = this.#tokenizer.decode([...this.#baseIds, id], { skipSpecialTokens: false, cleanUpTokenizationSpaces: false });
    const at = text.indexOf(STATIC_PREFIX);
    const clean = at < 0 ? this.#tokenizer.decode([id], { skipSpecialTokens: false, cleanUpTokenizationSpaces: false }) : text.slice(at + STATIC_PREFIX.length);
    return this.units(clean);
  }
}

/** Whether `tok` may sit `pos` units from the end of `stop` (pos ≥ 1), possibly running off its start. */
function validPosition(tok: readonly number[], stop: readonly number[], pos: number): boolean {
  // transformers: reversed(token).startswith(reversed(stop)[pos : pos + len(token)])
  const avail = Math.min(tok.length, stop.length - pos);
  for (let j = 0; j < avail; j++) if (tok[tok.length - 1 - j] !== stop[stop.length - 1 - pos - j]) return false;
  return true;
}

/** The stop-string units the final token can cover: every c in 1..len(tok) whose prefix tok[:c] ends like `stop`. */
function endOverlaps(tok: readonly number[], stop: readonly number[]): number[] {
  const out: number[] = [];
  for (let c = 1; c <= tok.length; c++) {
    const m = Math.min(c, stop.length);
    let ok = true;
    for (let j = 1; j <= m && ok; j++) ok = tok[c - j] === stop[stop.length - j];
    if (ok) out.push(m);
  }
  return out;
}

/**
 * `StopStringCriteria`: a row is done when the end of its sequence spells one of the stop strings, the final token
 * overlapping the string's end (see the file header). Needs the model's tokenizer.
 */
export class StopStringCriteria implements StoppingCriterion {
  readonly name = "StopStringCriteria";
  readonly stopStrings: readonly string[];
  readonly #texts: TokenTexts;
  readonly #stops: number[][];
  /** transformers only looks at the last `max(len(stop string))` tokens (one token per unit at most). */
  readonly #window: number;

  constructor(tokenizer: PreTrainedTokenizer, stopStrings: string | readonly string[]) {
    const list = typeof stopStrings === "string" ? [stopStrings] : stopStrings;
    if (!Array.isArray(list) || list.length === 0 || !list.every((s) => typeof s === "string" && s.length > 0)) {
      throw new ArgumentError(`Expected a non-empty string or a non-empty list of non-empty strings for stopStrings but received ${describe(stopStrings)}`);
    }
    if (tokenizer === null || typeof tokenizer !== "object" || typeof tokenizer.convertIdToToken !== "function") {
      throw new ArgumentError(`Expected the model's tokenizer for tokenizer (stop strings are matched against token texts) but received ${describe(tokenizer)}`);
    }
    this.stopStrings = [...list];
    this.#texts = new TokenTexts(tokenizer);
    this.#stops = this.stopStrings.map((s) => this.#texts.units(s));
    this.#window = Math.max(...this.#stops.map((s) => s.length));
  }

  /** The matching mode transformers would pick for this tokenizer. */
  get matchingMode(): StopStringMatchingMode {
    return this.#texts.mode;
  }

  isDone(sequences: readonly (readonly number[])[]): boolean[] {
    return sequences.map((seq) => this.#stops.some((stop) => this.#matches(seq, stop)));
  }

  #matches(seq: readonly number[], stop: readonly number[]): boolean {
    const n = seq.length;
    if (n === 0) return false;
    const first = n - Math.min(n, this.#window); // earliest index the window reaches
    const last = this.#texts.get(seq[n - 1] as number);
    if (last === null) return false;
    for (const start of endOverlaps(last, stop)) {
      let pos = start;
      if (pos >= stop.length) return true;
      for (let k = n - 2; k >= first; k--) {
        const tok = this.#texts.get(seq[k] as number);
        if (tok === null || !validPosition(tok, stop, pos)) break;
        pos += tok.length;
        if (pos >= stop.length) return true;
      }
    }
    return false;
  }
}
