# Makes the reference data for packages/transformers/test/ from the Python stack (transformers 5.17.0, the
# version the repository's fixtures/ were made with, plus its tokenizers / safetensors / jinja2):
#   rope-reference.json        inv_freq (float32 bits) and attention scaling for every rope type lowbit computes,
#                              the standardized rope_parameters, and the dynamic-NTK recompute sequence
#   config-reference.json      what PretrainedConfig derives for llama / mistral / qwen2 config.json variants
#   generation-reference.json  GenerationConfig from generation_config.json, or from config.json when it is absent
#   bnb-config-reference.json  BitsAndBytesConfig.to_dict() / to_diff_dict() and the config.json text of the block
#   tokenizer-reference.json   chat templates rendered by apply_chat_template, padded / truncated batches,
#                              special-token properties
#   writer-reference.safetensors  a file written by safetensors' own serializer (mixed dtypes, metadata)
# Run from the repository root inside a virtualenv that has transformers:
#   python3 -m venv --system-site-packages /tmp/tfvenv && /tmp/tfvenv/bin/pip install transformers==5.17.0
#   /tmp/tfvenv/bin/python tooling/scripts/gen-transformers-fixtures.py
# torch runs its baseline (non-AVX) CPU kernels (ATEN_CPU_CAPABILITY=default), so float32 pow comes from the
# C library's powf. The rope inv_freq values are computed a second time in a child process with the AVX2 kernels
# (SLEEF's vectorized powf, what torch uses on most machines): the two differ in the last bit of a few pow results
# (neither powf is correctly rounded everywhere), and the tests accept either (needs an AVX2 CPU).

import os
import subprocess
import sys

os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
ROPE_ONLY = len(sys.argv) > 1 and sys.argv[1] == "--rope-json"

import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from transformers import AutoConfig, AutoTokenizer, BitsAndBytesConfig, GenerationConfig  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIXTURES = os.path.join(ROOT, "fixtures")
OUT = os.path.join(ROOT, "packages", "transformers", "test", "fixtures")

assert transformers.__version__ == "5.17.0", f"expected transformers 5.17.0, found {transformers.__version__}"
if not ROPE_ONLY:
    os.makedirs(OUT, exist_ok=True)


def f32_bits(t):
    return [struct.unpack("<I", struct.pack("<f", float(x)))[0] for x in t.tolist()]


def write_json(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def load_config(d):
    tmp = tempfile.mkdtemp()
    try:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(d, f)
        return AutoConfig.from_pretrained(tmp)
    finally:
        shutil.rmtree(tmp)


def base(model_type, **kw):
    d = {"model_type": model_type, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 512, "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 2048}
    d.update(kw)
    return d


# ---------------------------------------------------------------- rope
ROPE_CASES = {
    "default-tiny-llama": json.load(open(os.path.join(FIXTURES, "tiny-llama", "config.json"))),
    "default-legacy-theta-500k": base("llama", hidden_size=512, rope_theta=500000.0),
    "default-mistral-theta-1e6": base("mistral", hidden_size=512, head_dim=128, rope_theta=1000000.0),
    "default-qwen2-no-head-dim": base("qwen2", hidden_size=896, num_attention_heads=14, rope_theta=1000000.0),
    "linear-legacy-type-key": base("llama", rope_theta=10000.0, rope_scaling={"type": "linear", "factor": 4.0}),
    "linear-partial-rotary": base("llama", rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
                                  partial_rotary_factor=0.5),
    "dynamic": base("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0}, rope_theta=10000.0),
    "dynamic-factor-3.5": base("qwen2", hidden_size=384, num_attention_heads=6, max_position_embeddings=1000,
                               rope_parameters={"rope_type": "dynamic", "factor": 3.5, "rope_theta": 1000000.0}),
    "yarn-qwen25": base("qwen2", hidden_size=1024, num_attention_heads=8, max_position_embeddings=32768,
                        rope_theta=1000000.0,
                        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}),
    "yarn-mscale-no-truncate": base("llama", max_position_embeddings=16384, rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 4096,
        "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 24, "beta_slow": 2, "truncate": False}),
    "yarn-attention-factor-default-omp": base("mistral", head_dim=96, rope_parameters={
        "rope_type": "yarn", "factor": 8.0, "rope_theta": 50000.0, "attention_factor": 1.25}),
    "llama3-llama31": base("llama", hidden_size=1024, num_attention_heads=8, max_position_embeddings=131072,
                           rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                              "original_max_position_embeddings": 8192}),
    "llama3-llama32-factor32": base("llama", hidden_size=2048, num_attention_heads=32, head_dim=64,
                                    max_position_embeddings=131072,
                                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 8192}),
}
# Sequence lengths fed, in this order, to one rotary module: dynamic NTK recomputes when the length grows past the
# cached one and resets to the original frequencies when it drops back under max_position_embeddings.
DYNAMIC_SEQUENCE = [100, 3000, 2500, 4096, 100, 2049, 9999]

def rope_bits():
    """inv_freq bits (and dynamic steps) of every case under this process's torch CPU capability."""
    out = {}
    for name, cfg in ROPE_CASES.items():
        rot = LlamaRotaryEmbedding(load_config(cfg))
        entry = {"inv_freq_bits": f32_bits(rot.inv_freq)}
        if rot.rope_type == "dynamic":
            entry["dynamic_steps"] = []
            for seq_len in DYNAMIC_SEQUENCE:
                rot(torch.zeros(1, dtype=torch.float32), torch.arange(seq_len)[None, :])
                entry["dynamic_steps"].append(f32_bits(rot.inv_freq))
        out[name] = entry
    return out


if ROPE_ONLY:
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "cases": rope_bits()}))
    sys.exit(0)

assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
child = subprocess.run([sys.executable, __file__, "--rope-json"], env=dict(os.environ, ATEN_CPU_CAPABILITY="avx2"),
                       check=True, capture_output=True, text=True)
avx2 = json.loads(child.stdout)
assert avx2["capability"] == "AVX2", f"the child ran with {avx2['capability']}, not AVX2"

rope = {}
for name, cfg in ROPE_CASES.items():
    config = load_config(cfg)
    rot = LlamaRotaryEmbedding(config)
    entry = {
        "config": cfg,
        "rope_parameters": config.rope_parameters,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        "inv_freq_bits": f32_bits(rot.inv_freq),
        "inv_freq_bits_avx2": avx2["cases"][name]["inv_freq_bits"],
        "attention_scaling": rot.attention_scaling,
    }
    if config.rope_parameters["rope_type"] == "dynamic":
        steps = []
        x = torch.zeros(1, dtype=torch.float32)
        for seq_len in DYNAMIC_SEQUENCE:
            rot(x, torch.arange(seq_len)[None, :])
            steps.append({"seq_len": seq_len, "inv_freq_bits": f32_bits(rot.inv_freq),
                          "inv_freq_bits_avx2": avx2["cases"][name]["dynamic_steps"][len(steps)]})
        entry["dynamic_steps"] = steps
    rope[name] = entry
write_json("rope-reference.json", {"transformers": transformers.__version__, "cases": rope})

# ---------------------------------------------------------------- config
CONFIG_CASES = {
    "tiny-llama": json.load(open(os.path.join(FIXTURES, "tiny-llama", "config.json"))),
    "llama-defaults": {"model_type": "llama"},
    "llama-legacy-torch-dtype-eos-list": base("llama", torch_dtype="float16", eos_token_id=[128001, 128008, 128009],
                                              bos_token_id=128000, tie_word_embeddings=True, rope_theta=500000.0,
                                              attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5),
    "mistral-defaults": {"model_type": "mistral"},
    "mistral-nemo-head-dim": base("mistral", hidden_size=5120, num_attention_heads=32, num_key_value_heads=8,
                                  head_dim=128, sliding_window=None, dtype="bfloat16", rope_theta=1000000.0),
    "qwen2-defaults": {"model_type": "qwen2"},
    "qwen2-sliding": base("qwen2", num_hidden_layers=6, use_sliding_window=True, sliding_window=1024,
                          max_window_layers=4, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
                          dtype="bfloat16"),
    "qwen2-sliding-off": base("qwen2", num_hidden_layers=3, use_sliding_window=False, sliding_window=1024,
                              max_window_layers=1),
}
FIELDS = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
          "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias", "mlp_bias",
          "sliding_window", "use_sliding_window", "max_window_layers", "layer_types", "rope_parameters", "use_cache",
          "attention_dropout"]
configs = {}
for name, cfg in CONFIG_CASES.items():
    config = load_config(copy.deepcopy(cfg))
    facts = {k: getattr(config, k) for k in FIELDS if hasattr(config, k)}
    facts["dtype"] = str(config.dtype).replace("torch.", "") if config.dtype is not None else None
    configs[name] = {"config": cfg, "expected": facts}
write_json("config-reference.json", {"transformers": transformers.__version__, "cases": configs})

# ---------------------------------------------------------------- generation config
GEN_FIELDS = sorted(set(GenerationConfig._get_default_generation_params().keys()) | {
    "max_new_tokens", "min_new_tokens", "min_p", "pad_token_id", "bos_token_id", "eos_token_id", "stop_strings"})
gen_cases = {}


def gen_record(gc):
    return {k: getattr(gc, k, None) for k in GEN_FIELDS}


tiny_cfg = json.load(open(os.path.join(FIXTURES, "tiny-llama", "config.json")))
GEN_DIRS = {
    "tiny-llama": {"config.json": tiny_cfg,
                   "generation_config.json": json.load(open(os.path.join(FIXTURES, "tiny-llama", "generation_config.json")))},
    "config-only": {"config.json": tiny_cfg},
    "config-only-eos-list-pad": {"config.json": dict(tiny_cfg, eos_token_id=[2, 7], pad_token_id=0, bos_token_id=None)},
    "sampling": {"config.json": tiny_cfg, "generation_config.json": {
        "bos_token_id": 1, "eos_token_id": [2, 5], "pad_token_id": 0, "do_sample": True, "temperature": 0.7,
        "top_p": 0.9, "top_k": 20, "min_p": 0.05, "max_new_tokens": 64, "repetition_penalty": 1.1,
        "transformers_version": "5.17.0"}},
}
for name, files in GEN_DIRS.items():
    tmp = tempfile.mkdtemp()
    try:
        for fname, content in files.items():
            with open(os.path.join(tmp, fname), "w") as f:
                json.dump(content, f)
        try:
            gc = GenerationConfig.from_pretrained(tmp)
        except OSError:  # what PreTrainedModel.from_pretrained does when generation_config.json is missing
            gc = GenerationConfig.from_pretrained(tmp, config_file_name="config.json", _from_model_config=True)
        gen_cases[name] = {"files": files, "expected": gen_record(gc)}
    finally:
        shutil.rmtree(tmp)
write_json("generation-reference.json", {"transformers": transformers.__version__,
                                         "global_defaults": GenerationConfig._get_default_generation_params(),
                                         "cases": gen_cases})

# ---------------------------------------------------------------- BitsAndBytesConfig
BNB_CASES = {
    "default": {},
    "nf4-double-bf16": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                        "bnb_4bit_compute_dtype": "bfloat16"},
    "fp4-storage-bf16": {"load_in_4bit": True, "bnb_4bit_compute_dtype": "float16", "bnb_4bit_quant_storage": "bfloat16"},
    "int8-skip-threshold": {"load_in_8bit": True, "llm_int8_threshold": 5.5, "llm_int8_skip_modules": ["lm_head", "mlp.down_proj"],
                            "llm_int8_enable_fp32_cpu_offload": True, "llm_int8_has_fp16_weight": True},
}
bnb = {}
for name, kw in BNB_CASES.items():
    c = BitsAndBytesConfig(**kw)
    bnb[name] = {"kwargs": kw, "to_dict": c.to_dict(), "to_dict_keys": list(c.to_dict().keys()),
                 "to_diff_dict": c.to_diff_dict(), "quantization_method": c.quantization_method(),
                 "json_sorted_indent2": json.dumps(c.to_dict(), indent=2, sort_keys=True) + "\n"}
write_json("bnb-config-reference.json", {"transformers": transformers.__version__, "cases": bnb})

# ---------------------------------------------------------------- tokenizers and chat templates
MESSAGES = {
    "single-user": [{"role": "user", "content": "What is 2+2?"}],
    "multi-turn": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "hello"}, {"role": "user", "content": "héllo wörld 🤗\n  indent"}],
}
# A template kept in tokenizer_config.json (no chat_template.jinja): Llama-2 style, exercising bos/eos_token, loop
# variables, namespace-free slicing, raise_exception branches, whitespace control and the tojson filter.
CONFIG_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}{{ '' }}{% endif %}"
    "{{ {'n': messages | length, 'last': messages[-1]['content']} | tojson }}"
)
LLAMA2_MESSAGES = {
    "with-system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " hi "},
                    {"role": "assistant", "content": "hello"}, {"role": "user", "content": "é \"quoted\""}],
    "no-system": [{"role": "user", "content": "one"}],
}

tok_out = {}
for dirname in ["tiny-llama", "tok-bytelevel"]:
    tok = AutoTokenizer.from_pretrained(os.path.join(FIXTURES, dirname))
    rec = {
        "class": type(tok).__name__,
        "padding_side": tok.padding_side,
        "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
        "unk_token": tok.unk_token, "unk_token_id": tok.unk_token_id,
        "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
        "all_special_tokens": tok.all_special_tokens, "all_special_ids": tok.all_special_ids,
        "chat": {},
    }
    for mname, msgs in MESSAGES.items():
        for agp in [False, True]:
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp)
            ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=agp, return_dict=False)
            if hasattr(ids, "tolist"):
                ids = ids.tolist()
            rec["chat"][f"{mname}/{'gen' if agp else 'nogen'}"] = {"messages": msgs, "add_generation_prompt": agp,
                                                                   "text": text, "ids": list(ids)}
    # Batches: pad = eos (tiny-llama has no pad token), both padding sides, truncation.
    tok.pad_token = tok.eos_token
    texts = ["Hello world", "def foo(x):\n    return x**2", "a"]
    batches = {}
    for side in ["left", "right"]:
        enc = tok(texts, padding=True, padding_side=side)
        batches[f"longest/{side}"] = {"texts": texts, "padding": "longest", "padding_side": side,
                                      "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    enc = tok(texts, padding="max_length", max_length=12, padding_side="right")
    batches["max_length/right"] = {"texts": texts, "padding": "max_length", "max_length": 12, "padding_side": "right",
                                   "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    enc = tok(texts, padding=True, truncation=True, max_length=4, padding_side="left")
    batches["truncate4/left"] = {"texts": texts, "padding": "longest", "truncation": True, "max_length": 4,
                                 "padding_side": "left", "input_ids": enc["input_ids"],
                                 "attention_mask": enc["attention_mask"]}
    rec["batches"] = batches
    tok_out[dirname] = rec

# tokenizer_config.json chat_template (no .jinja file) and a tokenizer_config.json carrying add_eos_token.
tmp = tempfile.mkdtemp()
try:
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(FIXTURES, "tiny-llama", f), tmp)
    tc = json.load(open(os.path.join(tmp, "tokenizer_config.json")))
    tc["chat_template"] = CONFIG_TEMPLATE
    json.dump(tc, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
    tok = AutoTokenizer.from_pretrained(tmp)
    tok_out["config-template"] = {
        "chat_template": CONFIG_TEMPLATE,
        "renders": {n: {"messages": m, "text": tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)}
                    for n, m in LLAMA2_MESSAGES.items()},
    }
    tc["add_eos_token"] = True
    tc["add_bos_token"] = True
    json.dump(tc, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
    tok = AutoTokenizer.from_pretrained(tmp)
    both = tok("Hello world")["input_ids"]
    tc["add_bos_token"] = False
    del tc["add_eos_token"]
    json.dump(tc, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
    tok = AutoTokenizer.from_pretrained(tmp)
    tok_out["add-bos-eos"] = {"text": "Hello world", "bos_and_eos": both, "no_bos": tok("Hello world")["input_ids"]}
    # Special tokens named in tokenizer_config.json but absent from tokenizer.json are added after the vocabulary:
    # the named ones (bos, eos, unk, sep, pad, cls, mask) first, then extra_special_tokens.
    tc = json.load(open(os.path.join(FIXTURES, "tiny-llama", "tokenizer_config.json")))
    tc["pad_token"] = {"__type": "AddedToken", "content": "<pad>", "lstrip": False, "normalized": False,
                       "rstrip": False, "single_word": False, "special": True}
    tc["extra_special_tokens"] = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    json.dump(tc, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
    tok = AutoTokenizer.from_pretrained(tmp)
    text = "<|im_start|>user<pad>x<|im_end|>"
    ids = tok(text)["input_ids"]
    tok_out["added-special"] = {"tokenizer_config": tc, "text": text, "ids": ids, "length": len(tok),
                                "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
                                "all_special_tokens": tok.all_special_tokens, "all_special_ids": tok.all_special_ids,
                                "decoded": tok.decode(ids, skip_special_tokens=True),
                                "decoded_with_special": tok.decode(ids, skip_special_tokens=False)}
finally:
    shutil.rmtree(tmp)
write_json("tokenizer-reference.json", {"transformers": transformers.__version__, "cases": tok_out})

# ---------------------------------------------------------------- safetensors writer reference
arrays = {
    "b.bias": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "a.weight": (np.arange(12, dtype=np.float32) - 5).astype(np.float16).reshape(3, 4),
    "z.codes": np.arange(-4, 5, dtype=np.int8),
    "m.mask": np.array([True, False, True]),
    "c.step": np.array(7, dtype=np.int64),
    "e.empty": np.zeros((0, 3), dtype=np.float32),
    "d.u8": np.arange(5, dtype=np.uint8),
    "f.i32": np.array([[1, -2], [3, -4]], dtype=np.int32),
    "g.i16": np.array([-300, 300], dtype=np.int16),
}
save_file(arrays, os.path.join(OUT, "writer-reference.safetensors"), metadata={"format": "pt"})
print("wrote", OUT)
