"""`tourney pairs`: pairing policies on the simulated judge, skipping rules, formats, bad input, and a real DPO step."""

import json
import os

import numpy as np
import pytest
from clirun import tourney

from tourney.engine import Engine
from tourney.io import Item
from tourney.pairs import PairStats, distinct, make_pairs, parse_policy
from tourney.simulated import SimulatedJudge
from tourney.tournament import Tournament

SIM = ["--judge", "simulated", "--no-cache"]


def separated_items(prompts=60, n=6, gap=3.0, seed=0):
    """Prompts whose responses have well-separated qualities (gap/tau = 3: the judge errs ~5% per vote)."""
    rng = np.random.default_rng(seed)
    items = []
    for p in range(prompts):
        q = rng.permutation(n) * gap
        texts = [f"p{p} answer {k}" for k in range(n)]
        items.append(Item(p, p + 1, f"question {p}", texts, [{"quality": float(x)} for x in q], {}))
    return items


def run_pairs(items, policy, judge=None, votes=1, strategy="round-robin", rating="elo", **kw):
    """Judge with the simulator and pair, as the CLI does (duplicates merged first)."""
    slim, index = zip(*(distinct(it) for it in items))
    tournament = Tournament(strategy, rating=rating, votes=votes, seed=0)
    engine = Engine(judge or SimulatedJudge(tau=1.0), tournament, keep_records=True)
    stats = PairStats()
    pairs = make_pairs(engine.run(slim).results, index, items, parse_policy(policy), stats=stats, **kw)
    return pairs, stats


@pytest.mark.parametrize("policy", ["best-worst", "top-bottom:2", "all:100"])
@pytest.mark.parametrize("rating", ["elo", "bt"])
def test_chosen_is_better_in_95_percent(policy, rating):
    items = separated_items()
    margin = 100 if rating == "elo" else 2.0  # ELO points vs BT log-strength
    pairs, stats = run_pairs(items, policy.replace("100", str(margin)), rating=rating)
    assert len(pairs) >= len(items)  # every prompt gives at least one pair
    right = [p.item.fields[p.chosen]["quality"] > p.item.fields[p.rejected]["quality"] for p in pairs]
    assert np.mean(right) >= 0.95, np.mean(right)
    assert all(p.score_chosen > p.score_rejected for p in pairs)
    if policy == "top-bottom:2":
        assert len(pairs) == 2 * len(items)
        for a, b in zip(pairs[::2], pairs[1::2]):  # no response on both sides of a prompt's pairs
            assert not {a.chosen, a.rejected} & {b.chosen, b.rejected}
    assert stats.pairs == len(pairs) and stats.skipped_unseparated == 0


def test_best_worst_is_the_ranking_ends():
    items = separated_items(prompts=5, n=4, gap=50.0)  # an error-free judge: the ranking is the quality order
    pairs, _ = run_pairs(items, "best-worst")
    for p in pairs:
        q = [f["quality"] for f in p.item.fields]
        assert p.chosen == int(np.argmax(q)) and p.rejected == int(np.argmin(q))
        assert (p.votes_for, p.votes_against, p.confidence) == (1, 0, 1.0)


def test_skipping_rules_are_counted_never_paired():
    items = [
        Item("one", 1, "q", ["only"], [{"quality": 1.0}], {}),
        Item("same", 2, "q", ["x", "x", "x"], [{"quality": 1.0}, {"quality": 5.0}, {"quality": 0.0}], {}),
        Item("ok", 3, "q", ["a", "b", "a"], [{"quality": 9.0}, {"quality": 0.0}, {"quality": 9.0}], {}),
    ]
    pairs, stats = run_pairs(items, "best-worst", judge=SimulatedJudge(tau=0.01))
    assert [p.item.id for p in pairs] == ["ok"]
    assert (pairs[0].chosen, pairs[0].rejected) == (0, 1)  # indices into the input's responses
    assert stats.skipped_too_few == 2 and stats.duplicates_merged == 3 and stats.prompts == 3
    # A judge whose every vote is invalid separated nothing: no pair, counted.
    pairs, stats = run_pairs(items[2:], "best-worst", judge=SimulatedJudge(invalid_rate=1.0), votes=3)
    assert pairs == [] and stats.skipped_unseparated == 1


def test_all_margin_and_min_confidence():
    items = separated_items(prompts=40, n=5, gap=1.0)
    pairs, _ = run_pairs(items, "all:0", votes=3)
    assert all(p.score_chosen - p.score_rejected >= 0 for p in pairs)
    wide, _ = run_pairs(items, "all:60", votes=3)
    assert 0 < len(wide) < len(pairs) and all(p.score_chosen - p.score_rejected >= 60 for p in wide)
    sure, stats = run_pairs(items, "all:0", votes=3, min_confidence=1.0)
    assert 0 < len(sure) < len(pairs) and stats.dropped_low_confidence == len(pairs) - len(sure)
    assert all(p.votes_against == 0 and p.votes_for == 3 and p.confidence == 1.0 for p in sure)


def test_knockout_pairs_without_a_direct_match_have_no_confidence():
    items = separated_items(prompts=20, n=8, gap=50.0)
    pairs, _ = run_pairs(items, "best-worst", strategy="knockout")
    assert any(p.confidence is None and p.votes_for == p.votes_against == 0 for p in pairs)
    kept, stats = run_pairs(items, "best-worst", strategy="knockout", min_confidence=0.5)
    assert all(p.confidence is not None for p in kept) and stats.dropped_low_confidence == len(pairs) - len(kept)
    unmet = sum(p.confidence is None for p in pairs)
    assert 0 < stats.dropped_no_direct_vote == unmet <= stats.dropped_low_confidence
    assert stats.skipped_no_pair == 0  # every prompt had its best-worst pair: the dropped ones are counted once


@pytest.mark.parametrize(
    "text", ["worst-best", "top-bottom", "top-bottom:0", "top-bottom:x", "all", "all:-1", "all:inf"]
)
def test_unknown_pairing_policy(tmp_path, text):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "q", "responses": [{"text": "a", "quality": 1}, {"text": "b", "quality": 2}]}))
    p = tourney("pairs", src, "-o", tmp_path / "o.jsonl", "--pairing", text, *SIM)
    what = "unknown pairing policy" if text == "worst-best" else "bad value in pairing policy"
    assert p.returncode == 2 and f"{what} '{text}'" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def rows_file(tmp_path, chat=False, name="in.jsonl", n=4):
    src = tmp_path / name
    lines = []
    for p in range(3):
        prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{p}"}] if chat else f"q{p}"
        resp = [{"text": f"answer {p}.{k}", "quality": float(k * 3)} for k in range(n)]
        lines.append(json.dumps({"id": f"p{p}", "prompt": prompt, "responses": resp}))
    src.write_text("\n".join(lines) + "\n")
    return src


def test_bad_input_cases(tmp_path):
    out = tmp_path / "o.jsonl"
    src = rows_file(tmp_path, n=3)
    p = tourney("pairs", src, "-o", out, "--pairing", "top-bottom:2", *SIM)
    assert p.returncode == 2 and f"{src}:1: field 'responses': top-bottom:2 needs at least 4" in p.stderr
    p = tourney("pairs", src, "-o", "-", "--format", "parquet", *SIM)
    assert p.returncode == 2 and "Parquet needs a file" in p.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "responses": [{"text": "a", "quality": 1}]}\n{"prompt": "q"}\n')
    p = tourney("pairs", bad, "-o", tmp_path / "o.parquet", *SIM)
    assert p.returncode == 2 and f"{bad}:2: field 'responses': missing" in p.stderr
    p = tourney("pairs", src, "-o", out, "--judge", str(tmp_path / "no-such-model"), "--family", "rm-r1")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "in.jsonl"]  # no partial output, no temp files
    for option in (["--format", "parquet"], ["--rationale"], ["--min-confidence", "0.5"]):  # they shape the output
        p = tourney("pairs", src, "--dry-run", *option, *SIM)
        assert (
            p.returncode == 2
            and p.stderr == f"tourney: error: {option[0]} has no effect with --dry-run (it writes nothing)\n"
        )
    assert tourney("pairs", src, "--dry-run", "--pairing", "all:0", *SIM).returncode == 0  # it checks the rows


def test_string_prompts_give_strings_and_same_bytes(tmp_path):
    src = rows_file(tmp_path)
    args = ["pairs", src, "--votes", "3", "--seed", "4", "--sim-tau", "2", "--pairing", "all:0", "-q", *SIM]
    a, b = tourney(*args), tourney(*args)
    assert a.returncode == 0 and a.stdout == b.stdout and a.stderr == ""
    rows = [json.loads(line) for line in a.stdout.splitlines()]
    assert rows and all(isinstance(r[k], str) for r in rows for k in ("prompt", "chosen", "rejected"))
    r = rows[0]
    assert set(r) == {
        "prompt",
        "chosen",
        "rejected",
        "prompt_id",
        "chosen_index",
        "rejected_index",
        "score_chosen",
        "score_rejected",
        "margin",
        "votes_for",
        "votes_against",
        "votes_invalid",
        "confidence",
    }
    assert r["chosen"] == f"answer {r['prompt_id'][1]}.{r['chosen_index']}"
    assert r["margin"] == pytest.approx(r["score_chosen"] - r["score_rejected"])
    assert r["votes_for"] + r["votes_against"] + r["votes_invalid"] == 3


def test_chat_prompts_are_conversational_with_rationale_and_parquet(tmp_path):
    import pyarrow.parquet as pq

    src = rows_file(tmp_path, chat=True)
    out, pq_out, summary = tmp_path / "o.jsonl", tmp_path / "o.parquet", tmp_path / "s.json"
    p = tourney("pairs", src, "-o", out, "--rationale", "--votes", "2", "--summary", summary, *SIM)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert r["prompt"][0] == {"role": "system", "content": "Be brief."} and r["prompt"][-1]["role"] == "user"
        assert r["chosen"] == [{"role": "assistant", "content": f"answer {r['prompt_id'][1]}.{r['chosen_index']}"}]
        assert r["rejected"][0]["role"] == "assistant" and len(r["rejected"]) == 1
        assert len(r["rationale"]) == 2 and {w["chosen_shown_as"] for w in r["rationale"]} == {"A", "B"}
        assert all(w["raw"].startswith("[simulated]") for w in r["rationale"])
        # Each judgment as --judgments has it: P(A) says which side won (the chosen one, shown as A or B).
        assert all(w["forced"] is False and w["p_a"] == float(w["verdict"] == "A") for w in r["rationale"])
    stats = json.loads(summary.read_text())
    assert stats["pairs"]["pairs"] == 3 and stats["judgments"] == 3 * 6 * 2
    p = tourney("pairs", src, "-o", pq_out, "--rationale", "--votes", "2", *SIM)
    assert p.returncode == 0, p.stderr
    assert pq.read_table(pq_out).to_pylist() == rows
    upper = tmp_path / "O.PARQUET"  # the suffix in any case, on output and input alike
    assert tourney("pairs", src, "-o", upper, "--rationale", "--votes", "2", *SIM).returncode == 0
    assert pq.read_table(upper).to_pylist() == rows
    p = tourney("train", "prepare", upper, "-o", tmp_path / "rl")
    assert p.returncode == 0 and (tmp_path / "rl" / "train.parquet").is_file(), p.stderr


def test_mixed_prompts_are_all_conversational(tmp_path):
    a = rows_file(tmp_path).read_text().splitlines()[:1]
    b = [
        line.replace('"id": "p', '"id": "c')
        for line in rows_file(tmp_path, chat=True, name="c.jsonl").read_text().splitlines()
    ]
    p = tourney("pairs", "-", *SIM, stdin="\n".join(a + b) + "\n")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and len(rows) == 4
    assert rows[0]["prompt"] == [{"role": "user", "content": "q0"}] and all(isinstance(r["chosen"], list) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("chat", [False, True])
def test_dpo_trainer_takes_a_step_on_the_pairs(tmp_path, tiny_model_dir, chat):
    """The pairs file loads with `datasets` and a real trl.DPOTrainer step runs on it (tiny model, CPU)."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out = tmp_path / "pairs.parquet"
    p = tourney("pairs", rows_file(tmp_path, chat=chat), "-o", out, *SIM)
    assert p.returncode == 0, p.stderr
    ds = load_dataset("parquet", data_files=str(out), split="train")
    assert len(ds) == 3 and isinstance(ds[0]["chosen"], list if chat else str)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = [t.detach().clone() for t in model.parameters()]
    cfg = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=3, max_steps=1, use_cpu=True,
                    report_to=[], save_strategy="no", logging_steps=1, max_length=128, learning_rate=1e-3)  # fmt: skip
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    result = trainer.train()
    assert result.global_step == 1 and np.isfinite(result.training_loss)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


@pytest.mark.slow
def test_gsm8k_end_to_end_with_smollm2(tmp_path, smollm2_dir, vllm_server):
    """The README's flow, command by command: `experiments.gsm8k prompts` -> `tourney sample` (smollm2 policy, the CLI
    starting its own engine) -> `experiments.gsm8k label` -> `tourney pairs` (the session's vLLM server as the judge:
    no second SmolLM2 engine; the SmolLM2 judge through the CLI is test_cli_models' quick start) -> `tourney train
    prepare`. Each output is the next command's input as written, ids untouched."""
    import pyarrow.parquet as pq

    from experiments import gsm8k

    src, samples, labelled = tmp_path / "prompts.jsonl", tmp_path / "samples.jsonl", tmp_path / "labelled.jsonl"
    pairs_out, data = tmp_path / "pairs.jsonl", tmp_path / "data"
    assert gsm8k.main(["prompts", "--limit", "3", "-o", str(src)]) == 0
    prompts = [json.loads(line) for line in src.read_text().splitlines()]
    assert [p["id"] for p in prompts] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    env = {"TOURNEY_CACHE_DIR": str(smollm2_dir.parents[1])}  # the converted SmolLM2 lives there
    sample_args = ["sample", src, "-o", samples, "--policy", "smollm2", "-n", 4, "--max-tokens", 48,
                   "--cache", tmp_path / "samples.sqlite"]  # fmt: skip
    p = tourney(*sample_args, "--summary", tmp_path / "s1.json", env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [(r["id"], r["prompt"], r["gold"]) for r in rows] == [(q["id"], q["prompt"], q["gold"]) for q in prompts]
    assert all(len(r["responses"]) == 4 and all(x["completion_tokens"] <= 48 for x in r["responses"]) for r in rows)
    assert json.loads((tmp_path / "s1.json").read_text())["generated"] == 12
    assert gsm8k.main(["label", str(samples), "-o", str(labelled)]) == 0
    marked = [json.loads(line) for line in labelled.read_text().splitlines()]
    for row, before in zip(marked, rows):
        assert row["gold"] == before["gold"] and [x["text"] for x in row["responses"]] == [
            x["text"] for x in before["responses"]]  # fmt: skip
        assert all(x["correct"] == gsm8k.is_correct(x["text"], row["gold"]) for x in row["responses"])
    p = tourney("pairs", labelled, "-o", pairs_out, "--judge", "tiny", "--family", "rm-r1", "--backend", "openai",
                "--base-url", vllm_server.url, "--max-tokens", 32, "--mode", "lockstep", "--rationale",
                "--cache", tmp_path / "judgments.sqlite", "--summary", tmp_path / "s2.json")  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    stats = json.loads((tmp_path / "s2.json").read_text())
    assert stats["judgments"] == 3 * 6 and (stats["judge"]["backend"], stats["judge"]["model"]) == ("openai", "tiny")
    got = stats["pairs"]
    assert got["prompts"] == 3 and got["pairs"] + got["skipped_too_few"] + got["skipped_unseparated"] == 3
    by_id = {r["id"]: r for r in rows}
    pairs = [json.loads(line) for line in pairs_out.read_text().splitlines()]
    for pair in pairs:
        texts = [x["text"] for x in by_id[pair["prompt_id"]]["responses"]]
        assert pair["prompt"] == by_id[pair["prompt_id"]]["prompt"]
        assert pair["chosen"] == texts[pair["chosen_index"]] and pair["rejected"] == texts[pair["rejected_index"]]
        assert pair["chosen"] != pair["rejected"] and pair["score_chosen"] > pair["score_rejected"]
    p = tourney("train", "prepare", pairs_out, "-o", data, "--family", "rm-r1")
    if not pairs:  # the tiny judge separated nothing: prepare says so (its own rule, not this flow's)
        assert p.returncode == 2 and "no pairs in the file" in p.stderr
    else:
        assert p.returncode == 0, p.stderr[-2000:]
        report = json.loads(p.stdout)
        assert report["pairs"] == len(pairs) and report["train"]["rows"] >= 1
        assert sum(pq.read_table(data / f"{split}.parquet").num_rows for split in ("train", "val")) == len(pairs)
    # Re-running the sampling answers from the cache: nothing generated, same bytes.
    first = samples.read_bytes()
    p = tourney(*sample_args, "--summary", tmp_path / "s3.json", env=env)
    assert p.returncode == 0 and samples.read_bytes() == first
    assert json.loads((tmp_path / "s3.json").read_text())["generated"] == 0


# --- the one writer: Parquet like JSONL ---------------------------------------------------------------------------


def test_parquet_pairs_get_the_umask_mode_and_an_existing_file_keeps_its_own(tmp_path):
    import pyarrow.parquet as pq

    from tourney.cli import main

    src, new, old = rows_file(tmp_path), tmp_path / "new.parquet", tmp_path / "old.parquet"
    old.write_bytes(b"")
    old.chmod(0o604)
    mask = os.umask(0o027)
    try:
        main(["pairs", str(src), "-o", str(new), "-q", *SIM])
        main(["pairs", str(src), "-o", str(old), "-q", *SIM])
    finally:
        os.umask(mask)
    assert new.stat().st_mode & 0o777 == 0o640 and old.stat().st_mode & 0o777 == 0o604
    assert pq.read_table(new).to_pylist() == pq.read_table(old).to_pylist() != []
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "new.parquet", "old.parquet"]  # no temp file left


def test_write_all_takes_parquet_and_jsonl_all_or_nothing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tourney.errors import InputError
    from tourney.io import parquet, write_all

    schema = pa.schema([("x", pa.int64())])
    jsonl, table = tmp_path / "a.jsonl", tmp_path / "t.parquet"
    write_all([(str(jsonl), ['{"x": 1}']), (str(table), parquet([{"x": 1}, {"x": 2}], schema)),
               ("/dev/null", parquet([{"x": 3}], schema))])  # fmt: skip
    assert jsonl.read_text() == '{"x": 1}\n' and pq.read_table(table).to_pylist() == [{"x": 1}, {"x": 2}]

    def full(out):
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match=f"{tmp_path / 't.parquet'}: cannot write: No space left on device"):
        write_all([(str(jsonl), ['{"x": 9}']), (str(table), full)])
    assert jsonl.read_text() == '{"x": 1}\n' and pq.read_table(table).num_rows == 2  # neither was replaced
    link = tmp_path / "link.parquet"
    link.symlink_to(table)
    write_all([(str(link), parquet([{"x": 5}], schema))])
    assert link.is_symlink() and pq.read_table(table).to_pylist() == [{"x": 5}]  # the link's target was written
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl", "link.parquet", "t.parquet"]
