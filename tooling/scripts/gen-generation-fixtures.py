# Makes the generation / streaming / perplexity reference data for packages/transformers/test/ from the Python stack
# (transformers 5.17.0, torch CPU), all in packages/transformers/test/fixtures/:
#   logits-process-reference.json  every logits processor / warper applied to fixed float32 scores (results as float32
#                                  bits, so -inf and exact values survive JSON), and the processor order that
#                                  `_get_logits_processor` builds for a config that enables all of them
#   stop-strings-reference.json    StopStringCriteria on every prefix of tokenized texts, for the tiny-llama
#                                  (byte-fallback) and tok-bytelevel (byte-level) tokenizers
#   streamer-reference.json        the (text, stream_end) calls TextStreamer makes to on_finalized_text when the ids of
#                                  a text are put one at a time after the prompt
#   tiny-llama-generate-reference.json  generate() on fixtures/tiny-llama loaded in float32: greedy with repetition
#                                  penalty / no-repeat n-gram / min-new-tokens, stop strings, a left-padded batch, and
#                                  the TextStreamer pieces of a greedy run
#   perplexity-reference.json      the HF guide's sliding-window perplexity of tiny-llama (float32 and float64) on a
#                                  short Python snippet, for several (max_length, stride)
# Run from the repository root inside a virtualenv that has transformers:
#   python3 -m venv --system-site-packages /tmp/tfvenv && /tmp/tfvenv/bin/pip install transformers==5.17.0
#   /tmp/tfvenv/bin/python tooling/scripts/gen-generation-fixtures.py

import json
import os
import struct
import warnings

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, TextStreamer
from transformers.generation import logits_process as lp
from transformers.generation.stopping_criteria import StopStringCriteria

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
torch.set_num_threads(1)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIXTURES = os.path.join(ROOT, "fixtures")
OUT = os.path.join(ROOT, "packages", "transformers", "test", "fixtures")
assert transformers.__version__ == "5.17.0", f"expected transformers 5.17.0, found {transformers.__version__}"
os.makedirs(OUT, exist_ok=True)


def f32_bits(t):
    return [struct.unpack("<I", struct.pack("<f", float(x)))[0] for x in t.flatten().tolist()]


def write_json(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


# The snippet the perplexity tests and the lowbit-infer demo use (apps/infer/src/demo.ts holds the same text).
SNIPPET = '''import os
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
'''

# ---------------------------------------------------------------- logits processors
gen = torch.Generator().manual_seed(1234)
V = 40
input_ids = torch.tensor([[3, 5, 5, 7, 9, 3, 5], [1, 2, 3, 1, 2, 3, 1]])
scores = (torch.randn(2, V, generator=gen) * 3).float()
special = scores.clone()
special[0, 3] = float("inf")
special[0, 4] = float("-inf")
special[1, 7] = float("nan")
one_token = torch.tensor([[5], [8]])

CASES = [
    ("RepetitionPenaltyLogitsProcessor", {"penalty": 1.3}, lp.RepetitionPenaltyLogitsProcessor(penalty=1.3), input_ids, scores),
    ("RepetitionPenaltyLogitsProcessor", {"penalty": 0.7}, lp.RepetitionPenaltyLogitsProcessor(penalty=0.7), input_ids, scores),
    ("NoRepeatNGramLogitsProcessor", {"ngramSize": 2}, lp.NoRepeatNGramLogitsProcessor(2), input_ids, scores),
    ("NoRepeatNGramLogitsProcessor", {"ngramSize": 3}, lp.NoRepeatNGramLogitsProcessor(3), input_ids, scores),
    ("NoBadWordsLogitsProcessor", {"badWordsIds": [[4], [3, 1], [2, 3, 1, 8], [39], [5, 5, 7, 9, 3, 5, 2, 6]], "eosTokenIds": [39]},
     lp.NoBadWordsLogitsProcessor([[4], [3, 1], [2, 3, 1, 8], [39], [5, 5, 7, 9, 3, 5, 2, 6]], eos_token_id=39), input_ids, scores),
    ("MinLengthLogitsProcessor", {"minLength": 10, "eosTokenIds": [39, 38]}, lp.MinLengthLogitsProcessor(10, [39, 38]), input_ids, scores),
    ("MinLengthLogitsProcessor", {"minLength": 5, "eosTokenIds": [39]}, lp.MinLengthLogitsProcessor(5, [39]), input_ids, scores),
    ("MinNewTokensLengthLogitsProcessor", {"promptLength": 4, "minNewTokens": 5, "eosTokenIds": [39]},
     lp.MinNewTokensLengthLogitsProcessor(4, 5, [39]), input_ids, scores),
    ("ForcedBOSTokenLogitsProcessor", {"bosTokenId": 1}, lp.ForcedBOSTokenLogitsProcessor(1), one_token, scores),
    ("ForcedEOSTokenLogitsProcessor", {"maxLength": 8, "eosTokenIds": [39, 2]}, lp.ForcedEOSTokenLogitsProcessor(8, [39, 2]), input_ids, scores),
    ("InfNanRemoveLogitsProcessor", {}, lp.InfNanRemoveLogitsProcessor(), input_ids, special),
    ("SuppressTokensLogitsProcessor", {"suppressTokens": [1, 5, 39]}, lp.SuppressTokensLogitsProcessor([1, 5, 39]), input_ids, scores),
    ("SuppressTokensAtBeginLogitsProcessor", {"beginSuppressTokens": [1, 5], "beginIndex": 7},
     lp.SuppressTokensAtBeginLogitsProcessor([1, 5], 7), input_ids, scores),
    ("TemperatureLogitsWarper", {"temperature": 0.7}, lp.TemperatureLogitsWarper(0.7), input_ids, scores),
    ("TemperatureLogitsWarper", {"temperature": 1.9}, lp.TemperatureLogitsWarper(1.9), input_ids, scores),
    ("TopKLogitsWarper", {"topK": 5}, lp.TopKLogitsWarper(5), input_ids, scores),
    ("TopKLogitsWarper", {"topK": 1}, lp.TopKLogitsWarper(1), input_ids, scores),
    ("TopPLogitsWarper", {"topP": 0.8}, lp.TopPLogitsWarper(0.8), input_ids, scores),
    ("TopPLogitsWarper", {"topP": 0.3, "minTokensToKeep": 3}, lp.TopPLogitsWarper(0.3, min_tokens_to_keep=3), input_ids, scores),
    ("MinPLogitsWarper", {"minP": 0.1}, lp.MinPLogitsWarper(0.1), input_ids, scores),
    ("MinPLogitsWarper", {"minP": 0.9, "minTokensToKeep": 2}, lp.MinPLogitsWarper(0.9, min_tokens_to_keep=2), input_ids, scores),
    ("TypicalLogitsWarper", {"mass": 0.9}, lp.TypicalLogitsWarper(0.9), input_ids, scores),
    ("EpsilonLogitsWarper", {"epsilon": 0.02}, lp.EpsilonLogitsWarper(0.02), input_ids, scores),
    ("EtaLogitsWarper", {"epsilon": 0.05}, lp.EtaLogitsWarper(0.05), input_ids, scores),
    ("LogitNormalization", {}, lp.LogitNormalization(), input_ids, scores),
]
processor_cases = []
for name, args, proc, ids, sc in CASES:
    out = proc(ids, sc.clone())
    processor_cases.append({"name": name, "args": args, "input_ids": ids.tolist(), "scores_bits": f32_bits(sc), "out_bits": f32_bits(out)})

# The order _get_logits_processor builds with every processor enabled (a model is needed for the method).
model32 = AutoModelForCausalLM.from_pretrained(os.path.join(FIXTURES, "tiny-llama"), dtype=torch.float32)
model32.eval()
gc_all = GenerationConfig(
    do_sample=True, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, typical_p=0.95, epsilon_cutoff=0.001,
    eta_cutoff=0.001, repetition_penalty=1.2, no_repeat_ngram_size=3, bad_words_ids=[[7]], min_length=3,
    min_new_tokens=2, forced_bos_token_id=1, forced_eos_token_id=2, remove_invalid_values=True,
    suppress_tokens=[5], begin_suppress_tokens=[6], renormalize_logits=True, eos_token_id=2, max_length=30,
)
gc_all._eos_token_tensor = torch.tensor([2])
order_all = [type(p).__name__ for p in model32._get_logits_processor(gc_all, input_ids_seq_length=7)]
gc_greedy = GenerationConfig(do_sample=False, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2, max_length=30)
gc_greedy._eos_token_tensor = None
order_greedy = [type(p).__name__ for p in model32._get_logits_processor(gc_greedy, input_ids_seq_length=7)]
write_json("logits-process-reference.json", {
    "transformers": transformers.__version__,
    "cases": processor_cases,
    "order": {
        "all": {"params": {"doSample": True, "temperature": 0.8, "topK": 20, "topP": 0.9, "minP": 0.05, "typicalP": 0.95,
                           "epsilonCutoff": 0.001, "etaCutoff": 0.001, "repetitionPenalty": 1.2, "noRepeatNgramSize": 3,
                           "badWordsIds": [[7]], "minLength": 3, "minNewTokens": 2, "forcedBosTokenId": 1,
                           "forcedEosTokenId": 2, "removeInvalidValues": True, "suppressTokens": [5],
                           "beginSuppressTokens": [6], "renormalizeLogits": True, "eosTokenId": 2, "maxLength": 30},
                "names": order_all},
        "greedy": {"params": {"doSample": False, "temperature": 0.8, "topK": 20, "topP": 0.9, "repetitionPenalty": 1.2, "maxLength": 30},
                   "names": order_greedy},
    },
})

# ---------------------------------------------------------------- stop strings and streamers
TOKENIZERS = {"tiny-llama": os.path.join(FIXTURES, "tiny-llama"), "tok-bytelevel": os.path.join(FIXTURES, "tok-bytelevel")}
STOP_TEXTS = [
    "def stop(self):\n    return self.stopper\n\n# done",
    "print('héllo wörld')  # 你好世界 end",
    "x = 1\n\n\ny = [a, b]\n",
]
STOP_SETS = [["stop"], ["\n\n"], ["wörld"], ["世界", "llo"], ["self.", "end"], [" = "], ["o"]]
stop_cases = []
for tname, tdir in TOKENIZERS.items():
    tok = AutoTokenizer.from_pretrained(tdir)
    for text in STOP_TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for stops in STOP_SETS:
            crit = StopStringCriteria(tok, stops)
            done = [bool(crit(torch.tensor([ids[: n + 1]]), None)[0]) for n in range(len(ids))]
            stop_cases.append({"tokenizer": tname, "text": text, "stop_strings": stops, "ids": ids, "done": done,
                               "mode": crit._stop_string_matching_mode})
write_json("stop-strings-reference.json", {"transformers": transformers.__version__, "cases": stop_cases})


class RecordingTokenizer:
    """Wraps a tokenizer and records every decode() the streamer makes, so the streamer logic can be tested on
    exactly Python's decoded strings."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.decodes = {}

    def decode(self, ids, **kwargs):
        text = self.tokenizer.decode(ids, **kwargs)
        self.decodes[json.dumps(list(ids))] = text
        return text


class RecordingStreamer(TextStreamer):
    def __init__(self, tokenizer, **kwargs):
        super().__init__(RecordingTokenizer(tokenizer), **kwargs)
        self.calls = []

    def on_finalized_text(self, text, stream_end=False):
        self.calls.append([text, stream_end])


STREAM_TEXTS = [
    "def main():\n    print('hello world')\n    return 0\n",
    "你好世界 hello 世界\n再见 ok",
    "a 😀 b 𠀀c and 語 x",
    "class Parser:\n    \"\"\"Parse  things.\"\"\"\n\n    def __init__(self):  pass",
]
stream_cases = []
for tname, tdir in TOKENIZERS.items():
    tok = AutoTokenizer.from_pretrained(tdir)
    for text in STREAM_TEXTS:
        ids = tok(text)["input_ids"]
        for skip_prompt in (False, True):
            for decode_kwargs in ({}, {"skip_special_tokens": True}):
                s = RecordingStreamer(tok, skip_prompt=skip_prompt, **decode_kwargs)
                prompt_len = 3
                s.put(torch.tensor([ids[:prompt_len]]))
                for t in ids[prompt_len:]:
                    s.put(torch.tensor([t]))
                s.end()
                stream_cases.append({"tokenizer": tname, "text": text, "ids": ids, "prompt_length": prompt_len,
                                     "skip_prompt": skip_prompt, "skip_special_tokens": decode_kwargs.get("skip_special_tokens", False),
                                     "calls": s.calls, "decodes": s.tokenizer.decodes})
write_json("streamer-reference.json", {"transformers": transformers.__version__, "cases": stream_cases})

# ---------------------------------------------------------------- generate() on tiny-llama (float32)
tok = AutoTokenizer.from_pretrained(os.path.join(FIXTURES, "tiny-llama"))
expected = json.load(open(os.path.join(FIXTURES, "tiny-llama", "expected.json")))
gen_cases = []
GEN_PARAMS = [
    {"max_new_tokens": 24},
    {"max_new_tokens": 24, "repetition_penalty": 1.3},
    {"max_new_tokens": 24, "no_repeat_ngram_size": 3},
    {"max_new_tokens": 16, "repetition_penalty": 1.2, "no_repeat_ngram_size": 2, "suppress_tokens": [899]},
    {"max_new_tokens": 24, "stop_strings": ["\n"]},
    {"max_new_tokens": 24, "stop_strings": ["self", "0, 0"]},
]
TS_NAMES = {"max_new_tokens": "maxNewTokens", "repetition_penalty": "repetitionPenalty", "no_repeat_ngram_size": "noRepeatNgramSize",
            "suppress_tokens": "suppressTokens", "stop_strings": "stopStrings"}
for params in GEN_PARAMS:
    for i, ids in enumerate(expected["input_ids"]):
        kwargs = dict(params)
        if "stop_strings" in kwargs:
            kwargs["tokenizer"] = tok
        with torch.no_grad():
            out = model32.generate(torch.tensor([ids]), do_sample=False, **kwargs)
        gen_cases.append({"params": {TS_NAMES[k]: v for k, v in params.items()}, "prompt": i, "sequence": out[0].tolist()})

with torch.no_grad():
    batch_out = model32.generate(torch.tensor(expected["batch_input_ids"]), attention_mask=torch.tensor(expected["batch_attention_mask"]),
                                 max_new_tokens=24, do_sample=False)
    stream_out = []
    for i, ids in enumerate(expected["input_ids"]):
        s = RecordingStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        model32.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, streamer=s)
        stream_out.append({"prompt": i, "calls": s.calls})
write_json("tiny-llama-generate-reference.json", {
    "transformers": transformers.__version__,
    "dtype": "float32",
    "cases": gen_cases,
    "batch": {"input_ids": expected["batch_input_ids"], "attention_mask": expected["batch_attention_mask"],
              "max_new_tokens": 24, "sequences": batch_out.tolist()},
    "streams": stream_out,
})

# ---------------------------------------------------------------- perplexity (the HF guide's loop)
def guide_perplexity(model, encodings, max_length, stride):
    seq_len = encodings.input_ids.size(1)
    nll_sum = 0.0
    n_tokens = 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings.input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = model(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    avg_nll = nll_sum / n_tokens
    return float(torch.exp(avg_nll)), float(avg_nll), n_tokens


model64 = AutoModelForCausalLM.from_pretrained(os.path.join(FIXTURES, "tiny-llama"), dtype=torch.float64)
model64.eval()
enc = tok(SNIPPET, return_tensors="pt")
ppl_cases = []
for max_length, stride in [(512, 512), (64, 32), (32, 16), (50, 50), (40, 7)]:
    for dtype, model in (("float32", model32), ("float64", model64)):
        ppl, nll, n = guide_perplexity(model, enc, max_length, stride)
        ppl_cases.append({"dtype": dtype, "max_length": max_length, "stride": stride, "perplexity": ppl, "mean_nll": nll, "scored_tokens": n})
write_json("perplexity-reference.json", {"transformers": transformers.__version__, "text": SNIPPET,
                                         "input_ids": enc.input_ids[0].tolist(), "cases": ppl_cases})
print("wrote", OUT)
