"""Verdict forcing exists once: both backends build the same forced prompt and the same P(A) for the same output.

The reference is computed apart from either backend: the prompt from the Hugging Face tokenizer by the documented rule,
P(A) from a transformers forward pass on the same tiny model. The same holds for a judge whose chat template opens
``<think>`` (the R1-distill templates of RM-R1 distilled and RRM): forced after closing ``</think>``, whatever the
family declares.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from servers import tiny_thinking_model

from tourney.backends.base import Generation, Sampling
from tourney.forcing import THINK_CLOSE, forced_prompt, forced_text, two_way
from tourney.judge import PairwiseJudge
from tourney.judges import get_family

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
CASES = {
    # A thinking judge cut off by the token limit while it mentions the verdict: the whole reasoning is kept.
    "rrm-truncated-thinking": ("rrm", "Assistant 1 says 4, which is right. So the answer is \\boxed{Assistant"),
    # A judge that began an invalid verdict: forced from where it began.
    "rm-r1-invalid-verdict": ("rm-r1", "Both are short. A is right.\n<answer>[[C]]</answer>"),
    # Reasoning longer than the context: its end is dropped, the prompt and the closing stay.
    "rrm-too-long": ("rrm", "step " * 1500 + "done"),
}


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir: Path):
    """The tiny model and tokenizer in transformers (fp32), for an independent P(A)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return tok, model


def verdict_prefix(tok, fam) -> tuple[str, list[int]]:
    """The verdict prefix to write and the two choice ids: each choice must be one token after it."""
    for prefix in (fam.verdict_prefix, fam.verdict_prefix.rstrip()):
        base = tok.encode(prefix, add_special_tokens=False)
        full = [tok.encode(fam.verdict_prefix + c, add_special_tokens=False) for c in fam.choices]
        if all(f[: len(base)] == base and len(f) == len(base) + 1 for f in full):
            return prefix, [f[-1] for f in full]
    raise AssertionError("no single-token choices")


def expected(tok, model, family_name: str, text: str, max_len: int, thinks: bool = False) -> tuple[list[int], float]:
    """The forced prompt by the documented rule, and softmax over the two choices from a transformers forward pass."""
    import torch

    fam = get_family(family_name)
    thinks = thinks or fam.thinks
    messages = fam.render(QUESTION, "4", "5")
    prompt = tok.encode(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                        add_special_tokens=False)  # fmt: skip
    prefix, choice = verdict_prefix(tok, fam)
    if thinks:
        body, closing = text, THINK_CLOSE + prefix
    else:
        cut = text.rfind(prefix)
        body = text[:cut]
        closing = prefix
    tail = tok.encode(body + closing, add_special_tokens=False)
    if len(prompt) + len(tail) + 1 > max_len:
        close = tok.encode(closing, add_special_tokens=False)
        tail = tok.encode(body, add_special_tokens=False)[: max_len - len(prompt) - 1 - len(close)] + close
    ids = prompt + tail
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    lp = torch.log_softmax(logits, -1)
    return ids, two_way(float(lp[choice[0]]), float(lp[choice[1]]))


@pytest.fixture(params=["vllm", "openai"])
def backend(request):
    """The in-process engine (the session one) or a real vLLM server, both on the tiny model with a 1024 context."""
    if request.param == "vllm":
        yield request.getfixturevalue("tiny_vllm_judge").backend
        return
    from tourney.backends.openai import OpenAIBackend

    server = request.getfixturevalue("vllm_server")
    pool = OpenAIBackend([server.url], "tiny", timeout=60.0)
    yield pool
    pool.close()


@pytest.mark.slow
@pytest.mark.xdist_group("tiny-vllm")  # its backend fixture asks for the session engine or server by name
@pytest.mark.parametrize("case", sorted(CASES))
def test_both_backends_force_the_same_prompt_and_probability(backend, reference_model, case):
    family_name, text = CASES[case]
    judge = PairwiseJudge(get_family(family_name), backend, Sampling(), verdict="logprobs")
    loop = backend.loop
    loop.run(judge._ensure_ready())
    messages = judge.family.render(QUESTION, "4", "5")
    prompt = loop.run(backend.chat_ids(messages))
    ids = loop.run(forced_prompt(backend, prompt, *forced_text(judge.family, judge._choices[0], text)))
    [(p_a, cost)] = loop.run(judge._force([messages], [Generation(text, "length", len(prompt), 7)]))

    want_ids, want_p = expected(*reference_model, family_name, text, backend.max_model_len)
    assert backend.max_model_len == 1024
    assert ids == want_ids
    assert (len(ids) == 1023) == (case == "rrm-too-long")
    assert p_a is not None and math.isclose(p_a, want_p, abs_tol=2e-3), (p_a, want_p)
    assert cost.prompt_tokens == len(ids) and cost.completion_tokens == 1


# ---- a thinking chat template (R1-distill style: the generation prompt ends with an open "<think>\n") --------------

THINKING_CASES = {
    # rm-r1 declares no thinking; the template does: cut mid-thinking, the verdict it began there is no verdict.
    "rm-r1-cut-mid-thinking": ("rm-r1", "Chatbot A says 4, which is right. So <answer>[[A"),
    # RRM's prefix keeps its trailing space ("\boxed{Assistant " then "1"/"2").
    "rrm-cut-mid-thinking": ("rrm", "Assistant 1 says 4, which is right. So \\boxed{Assistant"),
}


@pytest.fixture(scope="module")
def thinking_reference():
    """The tiny thinking-template model and its tokenizer in transformers (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_thinking_model()
    tok = AutoTokenizer.from_pretrained(folder)
    return tok, AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=["vllm", "openai"])
def thinking_backend(request):
    """The thinking model in-process (the session's thinking engine, pipelined) or on the session's thinking server."""
    if request.param == "vllm":
        yield request.getfixturevalue("thinking_vllm_engine")
        return
    from tourney.backends.openai import OpenAIBackend

    backend = OpenAIBackend([request.getfixturevalue("thinking_vllm_server").url], "tiny-think", timeout=60.0)
    yield backend
    backend.close()


@pytest.mark.slow
@pytest.mark.xdist_group("thinking-vllm")
@pytest.mark.parametrize("case", sorted(THINKING_CASES))
def test_thinking_template_forces_after_closing_think_on_both_backends(thinking_backend, thinking_reference, case):
    family_name, text = THINKING_CASES[case]
    backend, tok = thinking_backend, thinking_reference[0]
    judge = PairwiseJudge(get_family(family_name), backend, Sampling(), verdict="logprobs")
    backend.loop.run(judge._ensure_ready())
    assert judge.family.thinks and judge.identity()["family"]["thinks"]  # read from the template
    messages = judge.family.render(QUESTION, "4", "5")
    prompt = backend.loop.run(backend.chat_ids(messages))
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n<think>\n")
    ids = backend.loop.run(forced_prompt(backend, prompt, *forced_text(judge.family, judge._choices[0], text)))
    [(p_a, cost)] = backend.loop.run(judge._force([messages], [Generation(text, "length", len(prompt), 7)]))

    want_ids, want_p = expected(*thinking_reference, family_name, text, backend.max_model_len, thinks=True)
    assert ids == want_ids
    assert tok.decode(ids).endswith(text + "\n</think>\n\n" + judge.family.verdict_prefix)  # RRM's space kept
    assert p_a is not None and math.isclose(p_a, want_p, abs_tol=2e-3), (p_a, want_p)
    assert cost.prompt_tokens == len(ids) and cost.completion_tokens == 1
