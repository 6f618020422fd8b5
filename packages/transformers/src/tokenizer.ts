// AutoTokenizer / PreTrainedTokenizer: a model folder's tokenizer.json + tokenizer_config.json (+ chat templates)
// behaving as transformers 5 "fast" (tokenizers-backed) tokenizers do. The tokenization pipeline itself
// (normalizer, pre-tokenizer, BPE / Unigram / WordPiece model, post-processor, decoder) is @huggingface/tokenizers
// running tokenizer.json; this wrapper adds what transformers layers on top:
// - special tokens from tokenizer_config.json (string or AddedToken-dict form, TF4 `additional_special_tokens` or
//   TF5 `extra_special_tokens`, special_tokens_map.json as a fallback), added to the vocabulary when tokenizer.json
//   lacks them, with the ids the Rust `AddedVocabulary` would give;
// - `add_bos_token` / `add_eos_token` in tokenizer_config.json are ignored when tokenizer.json exists (transformers
//   5 pops them), so tokenizer.json's post-processor decides what is added;
// - padding (longest / max_length, left or right; the class default side — left for Llama-family tokenizers),
//   truncation that keeps room for the special tokens, decode that skips ids outside the vocabulary (as Rust does)
//   and returns "" for no ids, `clean_up_tokenization_spaces` defaulting to false;
// - chat templates rendered with @huggingface/jinja: chat_template.jinja (and additional_chat_templates/*.jinja)
//   win over tokenizer_config.json's `chat_template`; the rendered text is tokenized without special tokens.
// Not reproduced: transformers 5 rebuilding some classes' pipelines in Python (e.g. LlamaTokenizer re-creates its
// Metaspace pre-tokenizer and decoder from `legacy` / `add_prefix_space`) instead of reading tokenizer.json's;
// for tokenizer.json files written by transformers ≥ 4.40 the two agree.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { ArgumentError, describe } from "@lowbit/dtypes";
import { isJsonObject, type JsonObject } from "./config-base.js";
import { readJsonObject } from "./config.js";
import { ChatTemplateError, ConfigError } from "./errors.js";

export const TOKENIZER_FILE = "tokenizer.json";
export const TOKENIZER_CONFIG_FILE = "tokenizer_config.json";
export const SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json";
export const CHAT_TEMPLATE_FILE = "chat_template.jinja";
export const CHAT_TEMPLATE_DIR = "additional_chat_templates";

/** transformers' SPECIAL_TOKENS_ATTRIBUTES, in its order. */
export const SPECIAL_TOKEN_NAMES = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;
export type SpecialTokenName = (typeof SPECIAL_TOKEN_NAMES)[number];

/** Tokenizer classes whose `padding_side` class attribute is "left" in transformers 5. */
const LEFT_PADDING_CLASSES = new Set(["LlamaTokenizer", "CodeLlamaTokenizer", "CohereTokenizer", "GemmaTokenizer", "Siglip2Tokenizer", "XLNetTokenizer"]);
/** LlamaTokenizer's constructor defaults for tokens tokenizer_config.json does not name. */
const LLAMA_DEFAULT_SPECIALS: Partial<Record<SpecialTokenName, string>> = { unk_token: "<unk>", bos_token: "<s>", eos_token: "</s>" };

/** One entry of tokenizer.json's `added_tokens`. */
interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

export type PaddingSide = "left" | "right";

export interface EncodeOptions {
  /** Add the post-processor's special tokens (e.g. BOS). Default true. */
  addSpecialTokens?: boolean;
  /** true / "longest": pad to the longest sequence; "max_length": pad to maxLength; false: no padding (default). */
  padding?: boolean | "longest" | "max_length" | "do_not_pad";
  /** Cut each sequence to at most maxLength tokens (special tokens included). Default false. */
  truncation?: boolean;
  /** Length for truncation and "max_length" padding; truncation defaults to model_max_length. */
  maxLength?: number;
  /** Round padded lengths up to a multiple of this. */
  padToMultipleOf?: number;
  /** Default: the tokenizer's paddingSide. */
  paddingSide?: PaddingSide;
  /** Default: the tokenizer's truncationSide ("right": keep the beginning). */
  truncationSide?: PaddingSide;
  /** Pad id to use; default the pad token, else the first eos token. */
  padTokenId?: number;
}

export interface BatchEncoding {
  /** (batch, seq) token ids, padded when padding was requested. */
  readonly inputIds: number[][];
  /** (batch, seq) 1 for real tokens, 0 for padding. */
  readonly attentionMask: number[][];
}

export interface DecodeOptions {
  /** Drop special (added, special=true) tokens. Default false. */
  skipSpecialTokens?: boolean;
  /** Default: tokenizer_config.json's clean_up_tokenization_spaces (false when absent, as in transformers 5). */
  cleanUpTokenizationSpaces?: boolean;
}

export interface ChatMessage {
  role: string;
  content: unknown;
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** Append the template's assistant header. Default false. */
  addGenerationPrompt?: boolean;
  /** Render, then drop everything after the final message's content so the model continues it. Default false. */
  continueFinalMessage?: boolean;
  /** Return token ids (true, default) or the rendered string (false). */
  tokenize?: boolean;
  /** A template string, or the name of one of the tokenizer's named templates. */
  chatTemplate?: string;
  /** JSON-schema tool descriptions, passed to the template as `tools`. */
  tools?: readonly JsonObject[];
  /** Documents (objects with title / text), passed as `documents`. */
  documents?: readonly JsonObject[];
  /** Extra template variables; they override the special-token variables (bos_token, ...). */
  templateVariables?: Readonly<Record<string, unknown>>;
}

/** Content of a special token entry: a string, or an AddedToken dict `{content, lstrip, ...}`. */
function tokenContent(v: unknown, file: string, key: string): { content: string; flags: Partial<AddedTokenJson> } | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return { content: v, flags: {} };
  if (isJsonObject(v) && typeof v["content"] === "string") {
    const flags: Partial<AddedTokenJson> = {};
    for (const k of ["single_word", "lstrip", "rstrip", "normalized", "special"] as const) {
      if (typeof v[k] === "boolean") flags[k] = v[k] as boolean;
    }
    return { content: v["content"], flags };
  }
  throw new ConfigError(file, `expected a token string or an AddedToken object with a content string but received ${describe(v)}`, { key });
}

function checkTokenizerJson(tj: JsonObject, file: string): void {
  if (!isJsonObject(tj["model"])) throw new ConfigError(file, `expected a tokenizers-library JSON with a model object but received ${describe(tj["model"])}`, { key: "model" });
  const added = tj["added_tokens"];
  if (added !== undefined && added !== null && !Array.isArray(added)) throw new ConfigError(file, `expected a list but received ${describe(added)}`, { key: "added_tokens" });
  for (const [i, t] of (Array.isArray(added) ? added : []).entries()) {
    if (!isJsonObject(t) || typeof t["content"] !== "string" || typeof t["id"] !== "number" || !Number.isSafeInteger(t["id"]) || t["id"] < 0) {
      throw new ConfigError(file, `expected {id, content, ...} with a non-negative integer id but received ${describe(t)}`, { key: `added_tokens[${i}]` });
    }
  }
}

/** Size of the tokenizer model's own vocabulary (Rust `Model::get_vocab_size`). */
function modelVocabSize(model: JsonObject): number {
  const vocab = model["vocab"];
  if (Array.isArray(vocab)) return vocab.length;
  if (isJsonObject(vocab)) return Object.keys(vocab).length;
  return 0;
}

/** Whether the model vocabulary has `content`, and its id (BPE / WordPiece / WordLevel dicts, Unigram lists). */
function modelTokenId(model: JsonObject, content: string): number | undefined {
  const vocab = model["vocab"];
  if (isJsonObject(vocab)) {
    const id = Object.prototype.hasOwnProperty.call(vocab, content) ? vocab[content] : undefined;
    return typeof id === "number" ? id : undefined;
  }
  if (Array.isArray(vocab)) {
    const i = vocab.findIndex((e) => Array.isArray(e) && e[0] === content);
    return i >= 0 ? i : undefined;
  }
  return undefined;
}

export class PreTrainedTokenizer {
  /** tokenizer_config.json's `tokenizer_class` ("LlamaTokenizerFast"), or null. */
  readonly tokenizerClass: string | null;
  /** `model_max_length` (transformers' default for "unlimited" is about 1e30). */
  readonly modelMaxLength: number;
  readonly cleanUpTokenizationSpaces: boolean;
  /** The chat template, named templates as a record, or null when the tokenizer has none. */
  readonly chatTemplate: string | Readonly<Record<string, string>> | null;
  /** Where the tokenizer was loaded from. */
  readonly dir: string;
  private _paddingSide: PaddingSide;
  private _truncationSide: PaddingSide;
  private readonly tok: HfTokenizer;
  private readonly specials: Map<SpecialTokenName, string>;
  private readonly extraSpecials: readonly string[];
  private readonly vocabSizeWithoutAdded: number;
  private readonly idToToken: Map<number, string>;
  private readonly templateCache = new Map<string, Template>();

  private constructor(init: {
    dir: string;
    tokenizerJson: JsonObject;
    config: JsonObject;
    specials: Map<SpecialTokenName, string>;
    extraSpecials: string[];
    chatTemplate: string | Record<string, string> | null;
  }) {
    const { tokenizerJson, config } = init;
    this.dir = init.dir;
    this.specials = init.specials;
    this.extraSpecials = init.extraSpecials;
    this.chatTemplate = init.chatTemplate;
    const cls = typeof config["tokenizer_class"] === "string" ? config["tokenizer_class"] : null;
    this.tokenizerClass = cls;
    const side = config["padding_side"];
    const classSide: PaddingSide = cls !== null && LEFT_PADDING_CLASSES.has(cls.replace(/Fast$/, "")) ? "left" : "right";
    this._paddingSide = side === "left" || side === "right" ? side : classSide;
    const tside = config["truncation_side"];
    this._truncationSide = tside === "left" || tside === "right" ? tside : "right";
    const mml = config["model_max_length"];
    this.modelMaxLength = typeof mml === "number" && mml > 0 ? mml : 1e30;
    this.cleanUpTokenizationSpaces = config["clean_up_tokenization_spaces"] === true;
    this.vocabSizeWithoutAdded = modelVocabSize(tokenizerJson["model"] as JsonObject);
    // tokenizers.js reads a few tokenizer_config keys; give it plain strings for the special tokens and our
    // clean-up default (it defaults to true, transformers 5 to false).
    const jsConfig: JsonObject = { ...config, clean_up_tokenization_spaces: this.cleanUpTokenizationSpaces };
    delete jsConfig["additional_special_tokens"];
    delete jsConfig["extra_special_tokens"];
    for (const name of SPECIAL_TOKEN_NAMES) {
      const c = init.specials.get(name);
      if (c === undefined) delete jsConfig[name];
      else jsConfig[name] = c;
    }
    try {
      this.tok = new HfTokenizer(tokenizerJson, jsConfig);
    } catch (cause) {
      throw new ConfigError(join(init.dir, TOKENIZER_FILE), `cannot be loaded by @huggingface/tokenizers (${(cause as Error).message})`, { cause });
    }
    this.idToToken = new Map();
    // get_vocab walks the id → token array, which has holes when ids are not contiguous; skip those.
    for (const [token, id] of this.tok.get_vocab(true)) if (typeof token === "string") this.idToToken.set(id, token);
  }

  /** Loads a tokenizer from a model folder (tokenizer.json required, tokenizer_config.json optional). */
  static fromPretrained(dir: string): PreTrainedTokenizer {
    const tjPath = join(dir, TOKENIZER_FILE);
    if (!existsSync(tjPath)) {
      throw new ConfigError(tjPath, "is missing; lowbit needs the tokenizers-library JSON (slow sentencepiece / tiktoken tokenizers are not converted)");
    }
    const tokenizerJson = structuredClone(readJsonObject(tjPath));
    checkTokenizerJson(tokenizerJson, tjPath);
    const cfgPath = join(dir, TOKENIZER_CONFIG_FILE);
    const config = existsSync(cfgPath) ? readJsonObject(cfgPath) : {};
    const cls = typeof config["tokenizer_class"] === "string" ? config["tokenizer_class"].replace(/Fast$/, "") : null;

    // Named special tokens: tokenizer_config.json, then special_tokens_map.json (read by transformers 5 only when
    // tokenizer_config.json has no added_tokens_decoder), then LlamaTokenizer's constructor defaults.
    const mapPath = join(dir, SPECIAL_TOKENS_MAP_FILE);
    const stm = existsSync(mapPath) && !isJsonObject(config["added_tokens_decoder"]) ? readJsonObject(mapPath) : {};
    const toAdd: { content: string; flags: Partial<AddedTokenJson> }[] = [];
    const specials = new Map<SpecialTokenName, string>();
    for (const name of SPECIAL_TOKEN_NAMES) {
      const entry =
        tokenContent(config[name], cfgPath, name) ??
        tokenContent(stm[name], mapPath, name) ??
        (cls === "LlamaTokenizer" && LLAMA_DEFAULT_SPECIALS[name] !== undefined ? { content: LLAMA_DEFAULT_SPECIALS[name] as string, flags: {} } : null);
      if (entry === null) continue;
      specials.set(name, entry.content);
      toAdd.push(entry);
    }
    // Extra special tokens: TF5 `extra_special_tokens` (a list, or a dict of named ones), TF4 `additional_special_tokens`.
    const extraKey = config["extra_special_tokens"] !== undefined ? "extra_special_tokens" : "additional_special_tokens";
    let extraRaw = config[extraKey] ?? stm["additional_special_tokens"] ?? stm["extra_special_tokens"] ?? [];
    if (isJsonObject(extraRaw)) extraRaw = Object.values(extraRaw);
    if (!Array.isArray(extraRaw)) throw new ConfigError(cfgPath, `expected a list of tokens but received ${describe(extraRaw)}`, { key: extraKey });
    const extraSpecials: string[] = [];
    for (const [i, t] of extraRaw.entries()) {
      const entry = tokenContent(t, cfgPath, `${extraKey}[${i}]`);
      if (entry === null) continue;
      extraSpecials.push(entry.content);
      toAdd.push(entry);
    }
    // Tokens listed in added_tokens_decoder (TF4-saved configs) that tokenizer.json lacks.
    const atd = config["added_tokens_decoder"];
    if (isJsonObject(atd)) {
      const entries = Object.entries(atd).sort(([a], [b]) => Number(a) - Number(b));
      for (const [id, t] of entries) {
        const entry = tokenContent(t, cfgPath, `added_tokens_decoder.${id}`);
        if (entry !== null) toAdd.push({ content: entry.content, flags: { special: false, ...entry.flags } });
      }
    }
    addMissingTokens(tokenizerJson, toAdd);

    return new PreTrainedTokenizer({ dir, tokenizerJson, config, specials, extraSpecials, chatTemplate: loadChatTemplates(dir, config, cfgPath) });
  }

  // ------------------------------------------------------------ special tokens and vocabulary

  /** The content of a named special token, or null. */
  specialToken(name: SpecialTokenName): string | null {
    return this.specials.get(name) ?? null;
  }

  /** The id of a named special token, or null. */
  specialTokenId(name: SpecialTokenName): number | null {
    const t = this.specials.get(name);
    return t === undefined ? null : this.convertTokenToId(t);
  }

  get bosToken(): string | null {
    return this.specialToken("bos_token");
  }
  get bosTokenId(): number | null {
    return this.specialTokenId("bos_token");
  }
  get eosToken(): string | null {
    return this.specialToken("eos_token");
  }
  get eosTokenId(): number | null {
    return this.specialTokenId("eos_token");
  }
  get unkToken(): string | null {
    return this.specialToken("unk_token");
  }
  get unkTokenId(): number | null {
    return this.specialTokenId("unk_token");
  }
  get padToken(): string | null {
    return this.specialToken("pad_token");
  }
  get padTokenId(): number | null {
    return this.specialTokenId("pad_token");
  }

  /** `tokenizer.pad_token = token` (e.g. the eos token); the token must be in the vocabulary. */
  setPadToken(token: string | null): void {
    if (token === null) {
      this.specials.delete("pad_token");
      return;
    }
    if (typeof token !== "string" || this.tok.token_to_id(token) === undefined) {
      throw new ArgumentError(`Expected a token of the vocabulary for padToken but received ${describe(token)}`);
    }
    this.specials.set("pad_token", token);
  }

  /** Named special tokens as strings (transformers' `special_tokens_map`), the variables chat templates see. */
  get specialTokensMap(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of SPECIAL_TOKEN_NAMES) {
      const t = this.specials.get(name);
      if (t !== undefined) out[name] = t;
    }
    return out;
  }

  /** Named then extra special tokens, without duplicates (transformers' `all_special_tokens`). */
  get allSpecialTokens(): string[] {
    const named = SPECIAL_TOKEN_NAMES.map((n) => this.specials.get(n)).filter((t): t is string => t !== undefined);
    return [...new Set([...named, ...this.extraSpecials])];
  }

  get allSpecialIds(): number[] {
    return this.allSpecialTokens.map((t) => this.convertTokenToId(t)).filter((id): id is number => id !== null);
  }

  get paddingSide(): PaddingSide {
    return this._paddingSide;
  }
  set paddingSide(side: PaddingSide) {
    if (side !== "left" && side !== "right") throw new ArgumentError(`Expected "left" or "right" for paddingSide but received ${describe(side)}`);
    this._paddingSide = side;
  }
  get truncationSide(): PaddingSide {
    return this._truncationSide;
  }
  set truncationSide(side: PaddingSide) {
    if (side !== "left" && side !== "right") throw new ArgumentError(`Expected "left" or "right" for truncationSide but received ${describe(side)}`);
    this._truncationSide = side;
  }

  /** Size of the model vocabulary without added tokens (transformers' `vocab_size`). */
  get vocabSize(): number {
    return this.vocabSizeWithoutAdded;
  }

  /** Vocabulary size with added tokens (transformers' `len(tokenizer)`). */
  get length(): number {
    return this.idToToken.size;
  }

  /** A token's id, or null when it is not in the vocabulary. */
  convertTokenToId(token: string): number | null {
    return this.tok.token_to_id(token) ?? null;
  }

  /** An id's token, or null when the id is not in the vocabulary. */
  convertIdToToken(id: number): string | null {
    return this.idToToken.get(id) ?? null;
  }

  // ------------------------------------------------------------ encode / decode

  /** Token strings of one text (no special tokens unless asked). */
  tokenize(text: string, options: { addSpecialTokens?: boolean } = {}): string[] {
    if (typeof text !== "string") throw new ArgumentError(`Expected a string for text but received ${describe(text)}`);
    return this.tok.tokenize(text, { add_special_tokens: options.addSpecialTokens ?? false });
  }

  /** How many tokens the post-processor adds to one sequence (e.g. 1 for a BOS template). */
  numSpecialTokensToAdd(): number {
    const pp = this.tok.post_processor;
    return pp === null ? 0 : pp([], null, true).tokens.length;
  }

  /**
   * Encodes one text or a batch. Always returns a batch: `inputIds[i]` / `attentionMask[i]` for text i.
   * @throws ArgumentError for bad options, or when padding is requested and there is neither a pad nor an eos token
   */
  encode(text: string | readonly string[], options: EncodeOptions = {}): BatchEncoding {
    const texts = typeof text === "string" ? [text] : text;
    if (!Array.isArray(texts) || !texts.every((t) => typeof t === "string")) {
      throw new ArgumentError(`Expected a string or an array of strings for text but received ${describe(text)}`);
    }
    const addSpecialTokens = options.addSpecialTokens ?? true;
    if (typeof addSpecialTokens !== "boolean") throw new ArgumentError(`Expected a boolean for addSpecialTokens but received ${describe(addSpecialTokens)}`);
    const padding = options.padding ?? false;
    if (![true, false, "longest", "max_length", "do_not_pad"].includes(padding)) {
      throw new ArgumentError(`Expected true, false, "longest", "max_length" or "do_not_pad" for padding but received ${describe(padding)}`);
    }
    const maxLength = options.maxLength;
    if (maxLength !== undefined && (!Number.isSafeInteger(maxLength) || maxLength <= 0)) {
      throw new ArgumentError(`Expected a positive integer for maxLength but received ${describe(maxLength)}`);
    }
    const multiple = options.padToMultipleOf;
    if (multiple !== undefined && (!Number.isSafeInteger(multiple) || multiple <= 0)) {
      throw new ArgumentError(`Expected a positive integer for padToMultipleOf but received ${describe(multiple)}`);
    }
    const paddingSide = options.paddingSide ?? this._paddingSide;
    if (paddingSide !== "left" && paddingSide !== "right") throw new ArgumentError(`Expected "left" or "right" for paddingSide but received ${describe(paddingSide)}`);
    const truncationSide = options.truncationSide ?? this._truncationSide;
    if (truncationSide !== "left" && truncationSide !== "right") throw new ArgumentError(`Expected "left" or "right" for truncationSide but received ${describe(truncationSide)}`);

    const truncateTo = options.truncation === true ? (maxLength ?? this.modelMaxLength) : null;
    const inputIds = texts.map((t) => (truncateTo !== null && truncateTo < Number.MAX_SAFE_INTEGER ? this.encodeTruncated(t, addSpecialTokens, truncateTo, truncationSide) : this.tok.encode(t, { add_special_tokens: addSpecialTokens }).ids));

    let target: number | null = null;
    if (padding === true || padding === "longest") target = Math.max(0, ...inputIds.map((ids) => ids.length));
    else if (padding === "max_length") {
      if (maxLength === undefined) throw new ArgumentError('Expected maxLength to be set when padding is "max_length" but received undefined');
      target = maxLength;
    }
    if (target !== null && multiple !== undefined) target = Math.ceil(target / multiple) * multiple;
    const attentionMask = inputIds.map((ids) => ids.map(() => 1));
    if (target !== null && inputIds.some((ids) => ids.length < (target as number))) {
      const padId = this.paddingTokenId(options.padTokenId);
      for (let i = 0; i < inputIds.length; i++) {
        const ids = inputIds[i] as number[];
        const n = (target as number) - ids.length;
        if (n <= 0) continue;
        const pads = new Array<number>(n).fill(padId);
        const zeros = new Array<number>(n).fill(0);
        inputIds[i] = paddingSide === "left" ? [...pads, ...ids] : [...ids, ...pads];
        attentionMask[i] = paddingSide === "left" ? [...zeros, ...(attentionMask[i] as number[])] : [...(attentionMask[i] as number[]), ...zeros];
      }
    }
    return { inputIds, attentionMask };
  }

  /** The pad id: the explicit one, else the pad token, else the first eos token (what generation pads with). */
  private paddingTokenId(explicit: number | undefined): number {
    if (explicit !== undefined) {
      if (!Number.isSafeInteger(explicit) || explicit < 0) throw new ArgumentError(`Expected a non-negative integer for padTokenId but received ${describe(explicit)}`);
      return explicit;
    }
    const id = this.padTokenId ?? this.eosTokenId;
    if (id === null) {
      throw new ArgumentError("Expected a pad token for padding but the tokenizer has neither a pad token nor an eos token (pass padTokenId or call setPadToken)");
    }
    return id;
  }

  /** Like the Rust tokenizer's truncation: cut the sequence so that, with its special tokens, it fits maxLength. */
  private encodeTruncated(text: string, addSpecialTokens: boolean, maxLength: number, side: PaddingSide): number[] {
    const tokens = this.tok.tokenize(text, { add_special_tokens: false });
    const nSpecial = addSpecialTokens ? this.numSpecialTokensToAdd() : 0;
    const keep = maxLength - nSpecial;
    if (keep < 0) throw new ArgumentError(`Expected maxLength ≥ ${nSpecial} (the special tokens this tokenizer adds) for truncation but received ${maxLength}`);
    const cut = tokens.length <= keep ? tokens : side === "right" ? tokens.slice(0, keep) : tokens.slice(tokens.length - keep);
    const pp = this.tok.post_processor;
    const final = addSpecialTokens && pp !== null ? pp(cut, null, true).tokens : cut;
    const unk = this.unkTokenId;
    return final.map((t) => {
      const id = this.tok.token_to_id(t) ?? unk;
      if (id === null) throw new ArgumentError(`Expected every token of the truncated text to be in the vocabulary but ${JSON.stringify(t)} is not, and there is no unk token`);
      return id;
    });
  }

  /**
   * Decodes ids to text. Ids outside the vocabulary are skipped (as the Rust tokenizer does); no ids give "".
   * @throws ArgumentError when ids is not a list of non-negative integers
   */
  decode(ids: readonly number[] | ArrayLike<number>, options: DecodeOptions = {}): string {
    if (ids === null || typeof ids !== "object" || typeof (ids as ArrayLike<number>).length !== "number") {
      throw new ArgumentError(`Expected an array of token ids for ids but received ${describe(ids)}`);
    }
    const list = Array.from(ids as ArrayLike<number>);
    const known: number[] = [];
    for (const id of list) {
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) throw new ArgumentError(`Expected non-negative integer token ids for ids but received ${describe(id)} in ${describe(ids)}`);
      if (this.idToToken.has(id)) known.push(id);
    }
    if (known.length === 0) return "";
    return this.tok.decode(known, {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: options.cleanUpTokenizationSpaces ?? this.cleanUpTokenizationSpaces,
    });
  }

  batchDecode(sequences: readonly (readonly number[] | ArrayLike<number>)[], options: DecodeOptions = {}): string[] {
    if (!Array.isArray(sequences)) throw new ArgumentError(`Expected an array of id arrays for sequences but received ${describe(sequences)}`);
    return sequences.map((s) => this.decode(s, options));
  }

  // ------------------------------------------------------------ chat templates

  /** The template `applyChatTemplate` would use (transformers' `get_chat_template`). */
  getChatTemplate(chatTemplate?: string, tools?: readonly JsonObject[]): string {
    const own = this.chatTemplate;
    if (own !== null && typeof own === "object") {
      if (chatTemplate !== undefined && Object.prototype.hasOwnProperty.call(own, chatTemplate)) return own[chatTemplate] as string;
      if (chatTemplate !== undefined) return chatTemplate;
      if (tools !== undefined && own["tool_use"] !== undefined) return own["tool_use"];
      if (own["default"] !== undefined) return own["default"];
      throw new ChatTemplateError(`This tokenizer has several chat templates and none is named "default"; pass chatTemplate as one of: ${Object.keys(own).sort().join(", ")}`);
    }
    if (chatTemplate !== undefined) return chatTemplate;
    if (own === null) {
      throw new ChatTemplateError(`The tokenizer in ${this.dir} has no chat template (no ${CHAT_TEMPLATE_FILE} and no chat_template in ${TOKENIZER_CONFIG_FILE}); pass chatTemplate`);
    }
    return own;
  }

  /**
   * Renders a conversation with the chat template as transformers does (trim_blocks / lstrip_blocks, special
   * tokens as variables, `raise_exception`), then tokenizes it without adding special tokens.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions & { tokenize: false }): string;
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions & { tokenize?: true }): number[];
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): number[] | string;
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] | string {
    if (!Array.isArray(messages) || !messages.every((m) => isJsonObject(m) && typeof m["role"] === "string")) {
      throw new ArgumentError(`Expected an array of {role, content} messages for messages but received ${describe(messages)}`);
    }
    const addGenerationPrompt = options.addGenerationPrompt ?? false;
    const continueFinal = options.continueFinalMessage ?? false;
    if (addGenerationPrompt && continueFinal) {
      throw new ArgumentError("Expected at most one of addGenerationPrompt and continueFinalMessage but received both (continue the final message, or prompt a new assistant message)");
    }
    const source = this.getChatTemplate(options.chatTemplate, options.tools);
    let template = this.templateCache.get(source);
    if (template === undefined) {
      try {
        template = new Template(source);
      } catch (cause) {
        throw new ChatTemplateError(`The chat template does not parse: ${(cause as Error).message}`, { cause });
      }
      this.templateCache.set(source, template);
    }
    const TAG = "CONTINUE_FINAL_MESSAGE_TAG ";
    let chat = messages as readonly ChatMessage[];
    let finalContent = "";
    if (continueFinal) {
      const last = messages[messages.length - 1];
      if (last === undefined || typeof last.content !== "string") {
        throw new ArgumentError(`Expected the final message to have string content for continueFinalMessage but received ${describe(last?.content)}`);
      }
      finalContent = last.content;
      chat = [...messages.slice(0, -1), { ...last, content: last.content + TAG }];
    }
    let text: string;
    try {
      text = template.render({
        ...this.specialTokensMap,
        ...(options.templateVariables ?? {}),
        messages: chat,
        tools: options.tools ?? null,
        documents: options.documents ?? null,
        add_generation_prompt: addGenerationPrompt,
      });
    } catch (cause) {
      throw new ChatTemplateError(`The chat template failed: ${(cause as Error).message}`, { cause });
    }
    if (continueFinal) {
      const at = text.lastIndexOf(TAG.trim());
      if (at < 0 || !text.includes(finalContent.trim())) {
        throw new ChatTemplateError("continueFinalMessage is set but the final message does not appear in the rendered chat (the template changed it)");
      }
      text = text.slice(at, at + TAG.length) === TAG ? text.slice(0, at) : text.slice(0, at).trimEnd();
    }
    if (options.tokenize === false) return text;
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }
}

/**
 * Adds special tokens that tokenizer.json lacks, with the ids Rust's `AddedVocabulary::add_tokens` assigns: the
 * model vocabulary's id when the content is in it, else one past the largest added id (or the model vocabulary size).
 */
function addMissingTokens(tokenizerJson: JsonObject, toAdd: { content: string; flags: Partial<AddedTokenJson> }[]): void {
  const added = (Array.isArray(tokenizerJson["added_tokens"]) ? tokenizerJson["added_tokens"] : []) as AddedTokenJson[];
  tokenizerJson["added_tokens"] = added;
  const model = tokenizerJson["model"] as JsonObject;
  const vocabSize = modelVocabSize(model);
  for (const { content, flags } of toAdd) {
    if (added.some((t) => t.content === content)) continue;
    let id = modelTokenId(model, content);
    if (id === undefined) {
      const maxAdded = added.reduce((m, t) => Math.max(m, t.id), -1);
      id = maxAdded < 0 ? vocabSize : maxAdded >= vocabSize || vocabSize === 0 ? maxAdded + 1 : vocabSize;
    }
    added.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...flags });
  }
}

/** chat_template.jinja and additional_chat_templates/*.jinja win over tokenizer_config.json's chat_template. */
function loadChatTemplates(dir: string, config: JsonObject, cfgPath: string): string | Record<string, string> | null {
  const files: Record<string, string> = {};
  const main = join(dir, CHAT_TEMPLATE_FILE);
  if (existsSync(main)) files["default"] = readFileSync(main, "utf8");
  const extraDir = join(dir, CHAT_TEMPLATE_DIR);
  if (existsSync(extraDir)) {
    for (const f of readdirSync(extraDir).sort()) {
      if (f.endsWith(".jinja")) files[f.slice(0, -".jinja".length)] = readFileSync(join(extraDir, f), "utf8");
    }
  }
  const names = Object.keys(files);
  if (names.length === 1 && names[0] === "default") return files["default"] as string;
  if (names.length > 0) return files;
  const ct = config["chat_template"];
  if (ct === undefined || ct === null) return null;
  if (typeof ct === "string") return ct;
  // Legacy list form: [{name, template}, ...].
  if (Array.isArray(ct) && ct.every((t) => isJsonObject(t) && typeof t["name"] === "string" && typeof t["template"] === "string")) {
    return Object.fromEntries(ct.map((t) => [(t as JsonObject)["name"] as string, (t as JsonObject)["template"] as string]));
  }
  throw new ConfigError(cfgPath, `expected a template string or a list of {name, template} but received ${describe(ct)}`, { key: "chat_template" });
}

/** transformers-style entry point: `AutoTokenizer.fromPretrained(dir)`. */
export const AutoTokenizer = {
  fromPretrained: (dir: string): PreTrainedTokenizer => PreTrainedTokenizer.fromPretrained(dir),
} as const;
