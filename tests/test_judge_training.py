"""experiments/judge_training.py: its data (wrong final answers, held-out questions), the teacher on them, and the
evaluation's arithmetic (accuracy, "A" share, order consistency) from a ``--judgments`` file."""

from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest

from experiments import gsm8k
from experiments import judge_training as jt
from tourney.judges import FAMILIES, parse_verdict
from tourney.train.teacher import final_answer, fmt, rationale, steps_of


def judgment(pair: str, a: int, verdict: str | None, p_a: float | None = None) -> str:
    """One ``--judgments`` line of a two-response item (response 0 is the right one)."""
    return json.dumps({"id": pair, "a": a, "b": 1 - a, "vote": 0 if a == 0 else 1, "verdict": verdict, "p_a": p_a,
                       "forced": p_a is not None, "raw": ""})  # fmt: skip


def test_a_judge_that_always_says_a_is_half_right_all_a_and_never_consistent(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text("\n".join(judgment(f"p{k}", a, "A") for k in range(10) for a in (0, 1)) + "\n")
    ids, p = jt.p_chosen(path)
    assert ids == [f"p{k}" for k in range(10)] and p.shape == (10, 2) and (p[:, 0] == 1).all() and (p[:, 1] == 0).all()
    m = jt.pair_metrics(p, seed=0)
    assert m["accuracy"]["mean"] == 0.5 and m["a_share"]["mean"] == 1.0 and m["order_consistency"]["mean"] == 0.0
    assert m["accuracy"]["ci95"] == [0.5, 0.5]  # every pair scores the same: no spread to resample


def test_metrics_of_a_mixed_judge_written_and_forced_verdicts(tmp_path):
    lines = [
        judgment("right-both", 0, "A"), judgment("right-both", 1, "B"),  # consistent, right: one A, one B
        judgment("wrong-both", 0, "B"), judgment("wrong-both", 1, "A"),  # consistent, wrong
        judgment("forced", 0, "A", p_a=0.8), judgment("forced", 1, "A", p_a=0.7),  # says A twice: right then wrong
        judgment("tie", 0, None, p_a=0.5), judgment("tie", 1, "B"),  # a tie counts wrong and never consistent
    ]  # fmt: skip
    path = tmp_path / "j.jsonl"
    path.write_text("\n".join(lines) + "\n")
    _, p = jt.p_chosen(path)
    np.testing.assert_allclose(p, [[1, 1], [0, 0], [0.8, 0.3], [0.5, 1]])
    m = jt.pair_metrics(p, seed=0)
    assert m["accuracy"]["mean"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert m["a_share"]["mean"] == pytest.approx((0.5 + 0.5 + 1 + 0) / 4)
    assert m["order_consistency"]["mean"] == pytest.approx(2 / 4)
    low, high = m["accuracy"]["ci95"]
    assert low < m["accuracy"]["mean"] < high
    # pairs of one question are resampled together: each question here averages 0.5, so every resample does
    together = jt.pair_metrics(p, seed=0, groups=["q1", "q1", "q2", "q2"])["accuracy"]
    assert together == {"mean": 0.5, "ci95": [0.5, 0.5]}


def test_wrong_final_candidates_keep_the_working_and_change_only_the_answer():
    probs = gsm8k.load(limit=20)
    rows = gsm8k.synthetic(probs, pool=8, seed=1, mistake="final")
    assert rows == gsm8k.synthetic(probs, pool=8, seed=1, mistake="final")  # seeded
    wrong = [(r, x) for r in rows for x in r["responses"] if not x["correct"]]
    assert len(wrong) >= 20
    for row, x in wrong:
        assert x["answer"] != row["gold"]
        body = x["text"].rpartition("####")[0]
        assert all(step.holds for step in steps_of(body))  # every calculation is still right
    with pytest.raises(ValueError, match="mistake"):
        gsm8k.synthetic(probs, mistake="typo")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_teacher_backs_wrong_final_answers_with_the_right_verdict_in_both_orders(family):
    pairs = gsm8k.pairs(gsm8k.synthetic(gsm8k.load(limit=40), pool=8, seed=2, mistake="final"), per_prompt=2)
    fam, verdicts, taught = FAMILIES[family], [], 0
    for pair in pairs:
        for better, a, b in (("A", pair["chosen"], pair["rejected"]), ("B", pair["rejected"], pair["chosen"])):
            trace = rationale(fam, a, b, better)
            if trace is None:  # the wrong answer happens to be written in the working: the teacher cannot tell
                continue
            taught += 1
            verdicts.append(parse_verdict(fam, trace, quoted=(a, b)))
            assert verdicts[-1] == better
            wrong = b if better == "A" else a
            shown = fmt(final_answer(wrong))
            assert f"final answer ({shown})" in trace and f"answer {shown} (not in its work)." in trace
    assert taught >= 0.8 * 2 * len(pairs)
    assert verdicts.count("A") == verdicts.count("B")  # both orders of every pair: balanced


def test_held_out_questions_are_never_trained_on(tmp_path):
    opts = Namespace(seed=0, held_out=10, pairs_per_question=2, n=4)
    data = jt.make_data(tmp_path, opts)
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]  # noqa: E731
    train = {p["prompt"] for p in read(data["train_pairs"])}
    held = {p["prompt"] for p in read(data["held_pairs"])} | {s["prompt"] for s in read(data["sets"])}
    assert train and held and not train & held
    assert all(len(s["responses"]) == 4 for s in read(data["sets"]))
    assert all(len(gsm8k.STEP.findall(p.solution)) <= jt.MAX_STEPS for p in sum(jt.problems(0, 10), []))
    assert np.all([len(i["responses"]) == 2 for i in read(data["held_pairs"])])


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--grpo-batch", "6"], "multiple of --generations"), (["--held-out", "440"], "leave questions to train on")],
)
def test_option_values_are_checked_before_anything_runs(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        jt.main([*args, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
