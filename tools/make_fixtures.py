#!/usr/bin/env python3
"""Golden-output fixtures from HF transformers for nanovllm's correctness tests.

What it makes
-------------
Six tiny random-weight causal LMs, built on CPU in float32 with a fixed torch seed
(eager attention, ``model.eval()``), each saved in its own folder under ``--out``:

  qwen3/   Qwen3ForCausalLM  vocab 256, hidden 64, 2 layers, 4 q heads / 2 kv heads,
           head_dim 32 (!= hidden/heads = 16, on purpose), intermediate 128,
           rms_norm_eps 1e-6, rope_theta 1e4, tied embeddings (no lm_head.weight in the file).
  llama3/  LlamaForCausalLM  vocab 256, hidden 64, 2 layers, 4 q heads / 2 kv heads (head_dim 16),
           intermediate 128, rms_norm_eps 1e-5, rope_theta 5e5 with "llama3" rope scaling
           (factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 64:
           small so that the scaling really changes inv_freq at head_dim 16), untied lm_head.
  llama2/  LlamaForCausalLM  same sizes, 4 q heads / 4 kv heads (no GQA), rope_theta 1e4,
           no rope scaling, rms_norm_eps 1e-5, untied lm_head.
  mixtral/   MixtralForCausalLM  llama3's attention sizes, 8 experts x (64->48->64), top-2
           (softmax over the chosen logits), rope_theta 1e4, untied lm_head.
  qwen3_moe/ Qwen3MoeForCausalLM  qwen3's attention (q/k norm, head_dim 32), 3 layers: 0 and 2
           sparse (8 experts x 48, top-3, norm_topk_prob true), 1 dense (mlp_only_layers [1],
           intermediate 128).
  qwen2_moe/ Qwen2MoeForCausalLM  qkv bias, 4 layers, decoder_sparse_step 2 (1 and 3 sparse,
           0 and 2 dense, intermediate 128), 8 experts x 48, top-2, norm_topk_prob false, a
           shared expert (intermediate 96) behind its sigmoid gate.

MoE fixtures get a fourth prompt of one token repeated: every position routes alike, so most
experts get no token (the generator checks that some expert of some layer gets none), and
``expert_counts`` ([prompt][sparse layer][expert] prefill tokens routed to each expert, from
the router's top-k) to compare the engine's expert load with.

Weights are re-initialised with a larger spread than HF's default (linear / embedding
~ N(0, 0.2), RMSNorm weights ~ 1 + N(0, 0.1)) so logits are far from flat and the greedy
argmax is well separated.

Each folder gets ``config.json`` + ``generation_config.json`` + ``model.safetensors``
(float32, written by ``save_pretrained(safe_serialization=True)``, in whatever config dialect
the installed transformers writes), a trivial byte-level ``tokenizer.json`` (id == byte value;
the tests use token ids, the tokenizer is only a convenience) and ``golden.json``:

  model_type, transformers_version, torch_version, seed, prompt_seed, dtype ("float32"),
  eos_token_id            the config's eos id (0); prompts never contain it and the greedy
                          continuations are checked not to produce it, so stopping on eos or not
                          gives the same 8 tokens
  prompts                 [[ids]] x 3, lengths 5, 17, 40, ids uniform in [1, vocab)
  prefill_last_logits     [[vocab floats]] x 3: logits at the last prompt position
  prefill_logits_positions[[[vocab floats] x len]] for every prompt: every position
  greedy_tokens           [[8 ids]] x 3: model.generate(do_sample=False), no eos stop
  decode_logits           [[[vocab floats] x 8]] x 3: raw logits (generate's output_logits, no
                          processors) used to pick greedy_tokens[p][i]; so decode_logits[p][0] is the
                          prefill last-position logits and decode_logits[p][i] (i >= 1) are the
                          logits after feeding greedy_tokens[p][i-1] at position len(prompt)+i-1
  greedy_margins          [[8 floats]] x 3: top1 - top2 logit at each greedy step
  greedy_min_margin       min of the above (prompts are reseeded until it is >= 1e-3)
  rope_inv_freq           the model's inv_freq (head_dim/2 floats), after any rope scaling
  rope_inv_freq_unscaled  theta^(-2i/head_dim), for comparison

Floats are rounded to 6 significant digits.  All checks (generate vs. full no-cache recompute,
save/reload round trip, greedy == argmax of raw logits, no eos produced, margins, llama3
inv_freq actually scaled) run at generation time and abort on failure.

How to run
----------
    pip install torch transformers safetensors numpy   # CPU is enough; made with torch 2.11, transformers 5.17
    python3 tools/make_fixtures.py --out tests/fixtures
"""
import argparse
import json
import os
import sys

import torch
import transformers
from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM, MixtralConfig,
                          MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)

VOCAB = 256
PROMPT_LENS = (5, 17, 40)
N_NEW = 8
N_POS_PROMPTS = 3          # prompts whose every-position logits are stored
EOS = 0                    # never used in prompts
MIN_MARGIN = 1e-3
LINEAR_STD = 0.2
NORM_STD = 0.1


def specs():
    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=512, hidden_act="silu",
                  attention_bias=False, bos_token_id=None, eos_token_id=EOS, pad_token_id=None)
    return [
        ("qwen3", Qwen3ForCausalLM, Qwen3Config(
            **common, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
            tie_word_embeddings=True), 1234),
        ("llama3", LlamaForCausalLM, LlamaConfig(
            **common, num_key_value_heads=2, rms_norm_eps=1e-5, mlp_bias=False,
            rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                 low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=64),
            tie_word_embeddings=False), 2345),
        ("llama2", LlamaForCausalLM, LlamaConfig(
            **common, num_key_value_heads=4, rms_norm_eps=1e-5, mlp_bias=False,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
            tie_word_embeddings=False), 3456),
        ("mixtral", MixtralForCausalLM, moe(MixtralConfig, num_key_value_heads=2,
            rms_norm_eps=1e-5, num_local_experts=8, num_experts_per_tok=2, router_jitter_noise=0.0,
            intermediate_size=48, tie_word_embeddings=False), 4567),
        ("qwen3_moe", Qwen3MoeForCausalLM, moe(Qwen3MoeConfig, num_hidden_layers=3,
            num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, num_experts=8,
            num_experts_per_tok=3, moe_intermediate_size=48, norm_topk_prob=True,
            decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=False), 5678),
        ("qwen2_moe", Qwen2MoeForCausalLM, moe(Qwen2MoeConfig, num_hidden_layers=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, num_experts=8, num_experts_per_tok=2,
            moe_intermediate_size=48, shared_expert_intermediate_size=96, norm_topk_prob=False,
            decoder_sparse_step=2, mlp_only_layers=[],
            tie_word_embeddings=False), 6789),
    ]


def moe(cls, **kw):
    """A MoE config on the dense fixtures' sizes; routing stays deterministic (no jitter)."""
    base = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128, max_position_embeddings=512, hidden_act="silu",
                bos_token_id=None, eos_token_id=EOS, pad_token_id=None,
                rope_parameters=dict(rope_type="default", rope_theta=10000.0),
                output_router_logits=False)
    base.update(kw)
    return cls(**base)


def r6(x):
    """Nested lists of floats rounded to 6 significant digits."""
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if isinstance(x, list):
        return [r6(v) for v in x]
    return float(f"{x:.6g}")


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):   # tied lm_head is not listed twice
            if p.dim() == 1 and "norm" in name:   # RMSNorm weights (input/post-attn/final, q/k)
                p.copy_(1.0 + NORM_STD * torch.randn(p.shape, generator=g))
            else:   # embeddings, linear and expert weights, routers, qkv biases (qwen2_moe)
                assert p.dim() > 1 or name.endswith("bias"), name
                p.copy_(LINEAR_STD * torch.randn(p.shape, generator=g))


def full_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()


def top2_margin(logits):
    t = torch.topk(logits, 2).values
    return (t[0] - t[1]).item()


def make_prompts(prompt_seed, is_moe):
    g = torch.Generator().manual_seed(prompt_seed)
    prompts = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in PROMPT_LENS]
    if is_moe:   # one token repeated: every position routes alike, most experts get nothing
        prompts.append([int(torch.randint(1, VOCAB, (1,), generator=g))] * 12)
    return prompts


def routers(model):
    """The sparse layers' router modules (``mlp.gate`` / ``block_sparse_moe.gate``), in order."""
    out = []
    for layer in model.model.layers:
        block = getattr(layer, "block_sparse_moe", None) or layer.mlp
        gate = getattr(block, "gate", None)
        if gate is not None and hasattr(gate, "weight") and gate.weight.dim() == 2 \
                and gate.weight.shape[1] == model.config.hidden_size \
                and not hasattr(block, "gate_proj"):
            out.append(gate)
    return out


def expert_counts(model, ids):
    """[sparse layer][expert] tokens of a prefill of ``ids`` routed to each expert (top-k of
    the router logits, computed from the router's input)."""
    k = model.config.num_experts_per_tok
    counts = []

    def count(mod, args, kwargs):
        x = (args[0] if args else next(iter(kwargs.values()))).reshape(-1, mod.weight.shape[1])
        chosen = torch.topk(x.float() @ mod.weight.float().T, k).indices.flatten()
        counts.append(torch.bincount(chosen, minlength=mod.weight.shape[0]).tolist())

    hooks = [g.register_forward_pre_hook(count, with_kwargs=True) for g in routers(model)]
    full_logits(model, ids)
    for h in hooks:
        h.remove()
    return counts


def run_prompts(model, prompts):
    gc = GenerationConfig(do_sample=False, max_new_tokens=N_NEW, min_new_tokens=0,
                          eos_token_id=None, bos_token_id=None, pad_token_id=EOS,
                          num_beams=1, temperature=None, top_p=None, top_k=None,
                          repetition_penalty=None, output_logits=True, return_dict_in_generate=True)
    out = dict(prefill_last_logits=[], prefill_logits_positions=[], greedy_tokens=[],
               decode_logits=[], greedy_margins=[])
    for pi, ids in enumerate(prompts):
        full = full_logits(model, ids)                     # [len, vocab]
        with torch.no_grad():
            g = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               generation_config=gc)
        toks = g.sequences[0, len(ids):].tolist()
        steps = torch.stack([l[0].float() for l in g.logits])   # [N_NEW, vocab], raw
        assert len(toks) == N_NEW and steps.shape == (N_NEW, VOCAB), (len(toks), steps.shape)
        # Cross-checks: greedy == argmax of raw logits; KV-cached decode == full recompute.
        assert toks == steps.argmax(-1).tolist(), "greedy tokens are not the argmax of raw logits"
        ref = full_logits(model, ids + toks)[len(ids) - 1:len(ids) - 1 + N_NEW]
        err = (ref - steps).abs().max().item()
        assert err < 1e-4, f"generate vs no-cache recompute differ by {err}"
        assert (steps[0] - full[-1]).abs().max().item() < 1e-4
        out["prefill_last_logits"].append(full[-1])
        if pi < N_POS_PROMPTS:
            out["prefill_logits_positions"].append(full)
        out["greedy_tokens"].append(toks)
        out["decode_logits"].append(steps)
        out["greedy_margins"].append([top2_margin(s) for s in steps])
    return out


def byte_tokenizer_json():
    """Byte-level BPE with no merges: token id == byte value (GPT-2 byte->unicode alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): b for b, c in sorted(zip(bs, cs))}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": []},
    }


def build(name, cls, config, seed, out_root):
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = cls(config).float().eval()
    init_weights(model, seed)
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    rot = model.model.rotary_emb
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    theta = config.rope_parameters["rope_theta"]
    inv = rot.inv_freq.float()
    inv0 = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    print(f"[{name}] head_dim={head_dim} rope={config.rope_parameters}")
    print(f"[{name}] inv_freq          = {[f'{v:.4e}' for v in inv.tolist()]}")
    print(f"[{name}] inv_freq unscaled = {[f'{v:.4e}' for v in inv0.tolist()]}")
    scaled = not torch.allclose(inv.double(), inv0, rtol=1e-5)
    assert scaled == (config.rope_parameters["rope_type"] == "llama3"), f"{name}: unexpected rope scaling state"

    is_moe = "moe" in name or name == "mixtral"
    prompt_seed = seed
    for _ in range(100):
        prompts = make_prompts(prompt_seed, is_moe)
        res = run_prompts(model, prompts)
        margin = min(min(m) for m in res["greedy_margins"])
        emits_eos = any(EOS in t for t in res["greedy_tokens"])
        if margin >= MIN_MARGIN and not emits_eos:
            break
        print(f"[{name}] prompt seed {prompt_seed}: min margin {margin:.3g}, eos emitted {emits_eos}; reseeding")
        prompt_seed += 1000
    else:
        sys.exit(f"{name}: could not find prompts with a robust greedy margin")

    extra = {}
    if is_moe:
        counts = [expert_counts(model, ids) for ids in prompts]
        n_sparse = len(routers(model))
        assert n_sparse >= 1 and all(len(c) == n_sparse for c in counts), (n_sparse, counts)
        assert any(0 in layer for c in counts for layer in c), "no expert went without tokens"
        print(f"[{name}] sparse layers {n_sparse}, expert counts of the repeated prompt {counts[-1]}")
        extra["expert_counts"] = counts

    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(byte_tokenizer_json(), f, ensure_ascii=False)

    # Round trip: the saved files reproduce the golden logits.
    re = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    for ids, last in zip(prompts, res["prefill_last_logits"]):
        err = (full_logits(re, ids)[-1] - last).abs().max().item()
        assert err == 0.0 or err < 1e-5, f"{name}: reload differs by {err}"

    golden = dict(
        model_type=config.model_type, transformers_version=transformers.__version__,
        torch_version=torch.__version__, seed=seed, prompt_seed=prompt_seed, dtype="float32",
        eos_token_id=EOS,
        prompts=prompts,
        prefill_last_logits=r6(res["prefill_last_logits"]),
        prefill_logits_positions=r6(res["prefill_logits_positions"]),
        greedy_tokens=res["greedy_tokens"],
        decode_logits=r6(res["decode_logits"]),
        greedy_margins=r6(res["greedy_margins"]),
        greedy_min_margin=r6(margin),
        rope_inv_freq=r6(inv),
        rope_inv_freq_unscaled=r6(inv0.float()),
        **extra,
    )
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    spread = [float(torch.std(l)) for l in res["prefill_last_logits"]]
    print(f"[{name}] prompt_seed={prompt_seed} greedy={res['greedy_tokens']} min_margin={margin:.4f} "
          f"last-logit std per prompt={[round(s, 3) for s in spread]}")
    print(f"[{name}] files: {sorted(os.listdir(d))}")
    from safetensors import safe_open
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        names = sorted(f.keys())
    print(f"[{name}] {len(names)} tensors, layer 1: {[n for n in names if '.layers.1.' in n][:12]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--only", nargs="*", help="subset of qwen3 llama3 llama2 mixtral qwen3_moe qwen2_moe")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for name, cls, config, seed in specs():
        if a.only and name not in a.only:
            continue
        build(name, cls, config, seed, a.out)


if __name__ == "__main__":
    main()
