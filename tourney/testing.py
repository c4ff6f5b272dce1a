"""Helpers for tests and benchmarks: a tiny random model that the real vLLM engine can load in seconds."""

from __future__ import annotations

from pathlib import Path

# Where build_tiny_model keeps SmolLM2's tokenizer, under the cache folder: parsing it out of the GGUF takes ~5 s,
# loading a saved copy 0.7 s, and a test session builds several tiny models.
TOKENIZER_SUBDIR = "models/smollm2-tokenizer"

# A chat template that thinks the way the DeepSeek-R1-Distill templates of RM-R1 (distilled) and RRM do, written on
# SmolLM2's own turn markers: BOS first, the system prompt bare, the generation prompt ends with an OPEN "<think>\n"
# (outputs hold "</think>" and no opening tag), and an earlier assistant turn keeps only what follows its last
# "</think>" (so an assistant turn prefilled through the template loses its reasoning).
THINKING_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages if message['role'] == 'system' %}{{ message['content'] }}{% endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '<|im_start|>user\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- set content = message['content'] -%}"
    "{%- if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif -%}"
    "{{ '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{% endif -%}"
)


def build_tiny_model(
    out: Path,
    seed: int = 0,
    kv_heads: int = 1,
    max_positions: int = 4096,
    chat_template: str | None = None,
    layers: int = 2,
) -> Path:
    """Save a tiny RANDOM Llama (hidden 64, 2 layers, head size 32) with SmolLM2's real tokenizer and chat template.

    Head size 32 is the smallest vLLM's CPU attention accepts. Its outputs are noise: it exercises plumbing only.
    ``kv_heads``: 2 for tensor parallelism over 2 ranks (each rank needs a KV head). ``max_positions``: the model's
    own context limit (plays a real judge's 131,072). ``chat_template`` replaces SmolLM2's template (e.g.
    ``THINKING_TEMPLATE``). ``layers``: more makes each position's KV cache bigger (a context that cannot fit, in
    fewer positions).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer()))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()  # as .to(torch.float32); transformers' wrapped .to() confuses mypy
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    if chat_template is not None:
        tok.chat_template = chat_template
    tok.save_pretrained(str(out))
    return out


def smollm2_tokenizer() -> Path:
    """A folder holding SmolLM2's tokenizer: the converted model's if there is one, else a copy saved from the GGUF
    on first use."""
    from tourney.cache import cache_dir
    from tourney.models import fill_once, is_complete, smollm2_gguf, smollm2_path

    converted = smollm2_path()
    if is_complete(converted):
        return converted

    def save(folder: Path) -> None:
        from transformers import AutoTokenizer

        gguf = smollm2_gguf()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(folder))

    target = (cache_dir() / TOKENIZER_SUBDIR).resolve()  # the tests link it to one folder per run (lock file beside)
    return fill_once(target, save, lambda folder: (folder / "tokenizer_config.json").is_file())
