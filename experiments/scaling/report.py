"""Outputs of a run: results.jsonl (one row per cell), results.md (a table), PNG plots with bootstrap CIs.

Plots (matplotlib, Agg): best-of-N accuracy vs N, vs judge calls per prompt, vs k (votes; every line at one N, so
lines compare), and vs max tokens or budget when those are swept; one panel per judge, one colour per strategy, a
marker and line style per other setting. Error bars are 95% bootstrap intervals over prompts (the y label and a
caption say so); the series of a panel are dodged sideways a little so their bars do not hide each other. A plot
whose x axis has a single value in the sweep is not drawn.
"""

from __future__ import annotations

import io
import os
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tourney.io import dumps, umask  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
STYLES = ["-", "--", ":", "-."]
DODGE = 0.04  # sideways step between a panel's series: a share of the gap between x ticks (of an octave on log axes)
LOG_AXES = ("n", "judgments_per_prompt", "max_tokens", "budget")
CAPTION = ("Error bars: 95% bootstrap intervals over prompts. Series are shifted sideways a little so their bars do "
           "not overlap; results.md has the exact values.")  # fmt: skip


def jsonl(rows: Sequence[dict[str, Any]]) -> list[str]:
    """results.jsonl lines."""
    return [dumps(r) for r in rows]


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ci(row: dict[str, Any], key: str) -> str:
    ci = row.get(f"{key}_ci")
    return f"{_f(row[key])} [{_f(ci[0], 2)}, {_f(ci[1], 2)}]" if ci else _f(row[key])


def markdown(rows: Sequence[dict[str, Any]], command: str) -> list[str]:
    """results.md lines: what was run, on what data, and one table row per cell."""
    first = rows[0]
    judges = dict.fromkeys(r["judge_desc"] for r in rows)
    lines = [f"# Test-time compute scaling: {first['config']}", "", f"Data: {first['data']}.", ""]
    lines += [f"- judge {d}" for d in judges] + ["", f"Regenerate: `{command}`", ""]
    optional = [k for k in ("rating", "max_tokens", "budget") if any(r[k] is not None for r in rows)]
    head = ["judge", "strategy", *optional, "N", "k", "best-of-N [95% CI]", "oracle", "random", "majority",
            "pairwise acc", "pos. bias", "calls/prompt", "tokens/prompt", "invalid", "forced", "wall s"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["judge"], r["strategy"], *[_f(r[k]) if r[k] is not None else "–" for k in optional], r["n"],
                 r["votes"], _ci(r, "best_of_n"), _f(r["oracle"]), _f(r["random"]), _f(r["majority"]),
                 _f(r["pairwise_accuracy"]), _f(r["position_bias"]), _f(r["judgments_per_prompt"], 1),
                 _f(r["tokens_per_prompt"], 0), r["invalid"], r["forced"], _f(r["wall_s"], 1)]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "best-of-N: the selected candidate is correct; oracle: any of the N is; random: share correct "
              "(expected accuracy of a random pick); majority: vote over final answers. Intervals: bootstrap over "
              "prompts. Pairwise accuracy and position bias come from the judge's own correct-vs-wrong judgments. "
              "Tokens count every judgment used, cached ones included; wall s is this run's time (small when the "
              "judgments came from the cache)."]  # fmt: skip
    return lines


def _series_key(row: dict[str, Any], x: str) -> tuple:
    """What distinguishes a line: every swept setting except the x axis (and the judge: one panel each)."""
    keys = [k for k in ("strategy", "rating", "votes", "n", "max_tokens", "budget") if k != x]
    return tuple((k, row[k]) for k in keys if not (x == "judgments_per_prompt" and k == "n"))


def _label(key: tuple, varying: set[str]) -> str:
    d = dict(key)
    name = d["strategy"] + (f" {d['rating']}" if d.get("rating") else "")
    extra = [f"{short}={d[k]}" for k, short in (("votes", "k"), ("n", "N"), ("max_tokens", "tokens"),
                                                ("budget", "budget")) if k in d and k in varying]  # fmt: skip
    return " ".join([name, *extra])


def plot(rows: Sequence[dict[str, Any]], x: str, xlabel: str) -> bytes | None:
    """One PNG (bytes) of best-of-N accuracy against ``x``; None when ``x`` takes a single value."""
    fig = figure(rows, x, xlabel)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def figure(rows: Sequence[dict[str, Any]], x: str, xlabel: str) -> Any:
    """The matplotlib figure ``plot`` renders (the caller closes it); None when ``x`` takes a single value."""
    if x != "judgments_per_prompt" and len({r[x] for r in rows}) < 2:
        return None
    if x == "judgments_per_prompt" and len({r["n"] for r in rows}) < 2 and len({r["votes"] for r in rows}) < 2:
        return None
    judges = list(dict.fromkeys(r["judge"] for r in rows))
    varying = {k for k in ("votes", "n", "max_tokens", "budget") if len({r[k] for r in rows}) > 1}
    strategies = list(dict.fromkeys((r["strategy"], r["rating"]) for r in rows))
    others = list(dict.fromkeys(tuple(r[k] for k in sorted(varying - {x, "n"})) for r in rows))
    fig, axes = plt.subplots(1, len(judges), figsize=(5.2 * len(judges) + 1.2, 4.4), sharey=True, squeeze=False)
    for ax, judge in zip(axes[0], judges):
        mine = [r for r in rows if r["judge"] == judge]
        lines: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r in mine:
            lines[_series_key(r, x)].append(r)
        step = _dodge_step(mine, x)
        for i, (key, pts) in enumerate(lines.items()):
            pts = sorted(pts, key=lambda r: (r[x] is None, r[x] or 0))
            if x == "judgments_per_prompt":
                pts = [p for p in pts if p[x] > 0]  # N=1 takes no judgment: no point on a log axis
                if not pts:
                    continue
            d = dict(key)
            color = COLORS[strategies.index((d["strategy"], d.get("rating"))) % len(COLORS)]
            other = others.index(tuple(d[k] for k in sorted(varying - {x, "n"})))
            shift = (i - (len(lines) - 1) / 2) * step
            xs = [p[x] * 2**shift if x in LOG_AXES else p[x] + shift for p in pts]
            ys = [p["best_of_n"] for p in pts]
            lo = [p["best_of_n"] - p["best_of_n_ci"][0] for p in pts]
            hi = [p["best_of_n_ci"][1] - p["best_of_n"] for p in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], color=color, marker=MARKERS[other % len(MARKERS)],
                        linestyle=STYLES[other % len(STYLES)], capsize=2, markersize=4, linewidth=1.4,
                        label=_label(key, varying))  # fmt: skip
        _baselines(ax, mine, x)
        ax.set_title(mine[0]["judge_desc"], fontsize=9)
        ax.set_xlabel(xlabel)
        if x in LOG_AXES:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        if x in ("n", "votes"):
            ax.set_xticks(sorted({r[x] for r in mine}), [str(v) for v in sorted({r[x] for r in mine})])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best-of-N accuracy\n(95% bootstrap CI)")
    axes[0][0].set_ylim(0, 1.02)
    title = f"{rows[0]['config']}: {rows[0]['data']}"
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 12)), fontsize=9)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    caption = textwrap.wrap(CAPTION, width=int(fig.get_figwidth() * 17))  # one panel is narrow: wrap, never cut
    fig.text(0.01, 0.01, "\n".join(caption), fontsize=7.5, color="0.3", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.01 + 0.033 * len(caption), 1 - 1.6 / fig.get_figwidth(), 1))
    return fig


def _dodge_step(rows: Sequence[dict[str, Any]], x: str) -> float:
    """The sideways step between series: DODGE octaves on a log axis, else DODGE of the smallest gap between x values
    (so the spread stays well inside one tick's neighbourhood)."""
    if x in LOG_AXES:
        return DODGE
    values = sorted({r[x] for r in rows if r[x] is not None})
    gaps = [b - a for a, b in zip(values, values[1:])]
    return DODGE * (min(gaps) if gaps else 1)


def _baselines(ax: Any, rows: Sequence[dict[str, Any]], x: str) -> None:
    """Grey reference lines: oracle, majority vote and random pick at each N (or at the largest N)."""
    by_n = {r["n"]: r for r in rows}
    if x == "n":
        ns = sorted(by_n)
        for key, style, name in (("oracle", ":", "oracle (any correct)"), ("majority", "--", "majority vote"),
                                 ("random", "-.", "random pick")):  # fmt: skip
            ys = [by_n[n][key] for n in ns]
            if all(y is not None for y in ys):
                ax.plot(ns, ys, color="0.45", linestyle=style, linewidth=1.1, label=name)
        return
    top = by_n[max(by_n)]
    for key, style, name in (("random", "-.", "random pick"), ("majority", "--", f"majority vote (N={top['n']})"),
                             ("oracle", ":", f"oracle (N={top['n']})")):  # fmt: skip
        if top[key] is not None:
            ax.axhline(top[key], color="0.45", linestyle=style, linewidth=1.1, label=name)


PLOTS = (
    ("accuracy_vs_n.png", "n", "candidates N"),
    ("accuracy_vs_calls.png", "judgments_per_prompt", "judge calls per prompt (judgments, votes included)"),
    ("accuracy_vs_k.png", "votes", "votes per match k"),  # the label gets the one N of every line
    ("accuracy_vs_max_tokens.png", "max_tokens", "judge max tokens"),
    ("accuracy_vs_budget.png", "budget", "budget"),
)


def outputs(rows: Sequence[dict[str, Any]], out: str, command: str) -> dict[str, bytes | None]:
    """Every output file's bytes (None: not drawn), keyed by path."""
    files: dict[str, bytes | None] = {
        os.path.join(out, "results.jsonl"): "".join(line + "\n" for line in jsonl(rows)).encode(),
        os.path.join(out, "results.md"): "".join(line + "\n" for line in markdown(rows, command)).encode(),
    }
    for name, x, label in PLOTS:
        if x == "votes":
            n, at_n = one_n_for_k(rows)
            files[os.path.join(out, name)] = plot(at_n, x, f"{label} (every line at N = {n})")
        else:
            files[os.path.join(out, name)] = plot(rows, x, label)
    return files


def one_n_for_k(rows: Sequence[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """For the plot against k: the one N its lines share, and the rows at that N.

    Accuracy grows with N, so lines at different N do not compare; the N is the one where the most series (judge,
    strategy, rating, max tokens, budget) swept k, the largest of those on a tie (an N nobody swept k at when none
    did).
    """
    ks: dict[tuple, dict[int, set]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        ks[(r["judge"], r["strategy"], r["rating"], r["max_tokens"], r["budget"])][r["n"]].add(r["votes"])
    ns = {r["n"] for r in rows}
    n = max(ns, key=lambda n: (sum(len(by_n.get(n, ())) > 1 for by_n in ks.values()), n))
    return n, [r for r in rows if r["n"] == n]


def write(files: dict[str, bytes | None]) -> list[str]:
    """Write all files at once (temp files, then renames); returns the paths written."""
    import tempfile

    staged = []
    try:
        for path, data in files.items():
            if data is None:
                continue
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".scaling-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; outputs are ordinary files
            staged.append((tmp, path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    return [path for _, path in staged]
