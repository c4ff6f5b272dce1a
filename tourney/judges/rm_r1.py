"""Family "rm-r1": RM-R1 reasoning checkpoints (RM-R1-DeepSeek-Distilled-Qwen-*): one user message, no system prompt.

Texts are byte-exact copies of RM-R1-UIUC/RM-R1 (HEAD d4c2542) ``eval/reward-bench/rewardbench/generative.py``:
``RM_R1_SINGLE_TURN_REASONING_USER_PROMPT`` (identical to the model card's ``REASONING_SINGLE_PROMPT_TEMPLATE``)
and ``RM_R1_MULTI_TURN_REASONING_USER_PROMPT`` (placeholders renamed ``conversation_1/2`` -> ``conversation_a/b``).
A conversation is rendered as the RMB evaluation script does: one ``"User: ..."`` / ``"Chatbot A: ..."`` line per
turn, joined by ``"\\n"``, the candidate being the last Chatbot turn.

Sampling: greedy like the authors' evaluation (vLLM temperature 0, top_p 1). They allow 50000 new tokens; 32768 is
our default, which leaves room for the prompt in the 128K-position Qwen2.5 models and is far beyond typical traces.
"""

from __future__ import annotations

from tourney.judges.base import Family

SINGLE_TURN = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI Chatbots"
    " to the Client question displayed below. \n\n"
    "[Client Question]\n{question}\n\n"
    "[The Start of Chatbot A's Response]\n{answer_a}\n[The End of Chatbot A's Response]\n\n"
    "[The Start of Chatbot B's Response]\n{answer_b}\n[The End of Chatbot B's Response]\n\n"
    "Output your final verdict at last by strictly following this format: "
    "'<answer>[[A]]</answer>' if Chatbot A is better, or '<answer>[[B]]</answer>' if Chatbot B is better."
)

MULTI_TURN = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI Chatbots"
    " to the Client question displayed below. \n\n"
    "[The Start of the Conversation between Chatbot A and the Client]\n{conversation_a}\n"
    "[The End of the Conversation between Chatbot A and the Client]\n\n"
    "[The Start of the Conversation between Chatbot B and the Client]\n{conversation_b}\n"
    "[The End of the Conversation between Chatbot B and the Client]\n\n"
    "Output your final verdict at last by strictly following this format: "
    "'<answer>[[A]]</answer>' if Chatbot A is better, or '<answer>[[B]]</answer>' if Chatbot B is better."
)

FAMILY = Family(
    name="rm-r1",
    system=None,
    user=SINGLE_TURN,
    user_multi=MULTI_TURN,
    labels=("User", "Chatbot A", "Chatbot B"),
    verdicts=("<answer>[[A]]</answer>", "<answer>[[B]]</answer>"),
    verdict_prefix="<answer>[[",
    choices=("A", "B"),
    # Declared for the texts only: the DeepSeek-distilled templates open <think> in the generation prompt, and a judge
    # reads that from its model's template (tourney.judge) and then thinks; the Qwen-based ones do not.
    thinks=False,
    sampling={"temperature": 0.0, "top_p": 1.0, "max_tokens": 32768},
)
