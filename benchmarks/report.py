"""Benchmark outputs: results.json, results.md and, when accuracies are known, pareto.png.

Every file is written atomically (temporary file + rename, distill/io.py), so a benchmark killed
half-way leaves the previous complete files or the new ones, never a torn file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polydistill.io import atomic_write_json, atomic_write_text, save_figure

RESULTS_JSON, RESULTS_MD, PARETO_PNG = "results.json", "results.md", "pareto.png"


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _gflop(flops: float | None) -> str:
    return "–" if flops is None else f"{flops / 1e9:.3g}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def render_markdown(doc: dict[str, Any]) -> str:
    """A human-readable page of the results document."""
    lines = ["# polydistill benchmark", ""]
    if not doc.get("complete"):
        lines += ["> **Incomplete**: the benchmark was still running or was stopped; rows so far.", ""]
    for note in doc.get("notes", []):
        lines.append(f"> {note}")
    lines += ["", f"Command: `{doc.get('command', '')}`", ""]
    lines += ["## Environment", ""] + _environment_lines(doc.get("environment", {}))
    lines += ["", "## Matmul peaks (G(FL)OP/s; best / median of repeated n×n×n products)", ""]
    lines += _peak_table(doc.get("peaks") or {})
    forward = [r for r in doc.get("results", []) if r.get("stage") == "forward"]
    tokenize = [r for r in doc.get("results", []) if r.get("stage") == "tokenize"]
    lines += ["", "## Forward pass", ""] + _forward_table(forward)
    if tokenize:
        lines += ["", "## Tokenisation (timed separately, not part of the forward rows)", ""]
        lines += _tokenize_table(tokenize)
    notes = sorted({f"{r['model']} {r['backend']} {r['precision']}: {n}" for r in forward for n in r.get("notes", [])})
    if notes:
        lines += ["", "## Variant notes", ""] + [f"- {n}" for n in notes]
    if doc.get("skipped"):
        lines += ["", "## Not run", ""] + _not_run_lines(doc["skipped"])
    lines += [
        "",
        "p50/p90/p99 over interleaved runs; CI ±% is half the width of the median's 95% confidence interval "
        "relative to the median; settled = that full width is within the target. eff. = achieved FLOP/s at p50 "
        "over the measured matmul peak of the same precision (see benchmarks/README.md).",
        "",
    ]
    return "\n".join(lines)


def _environment_lines(env: dict[str, Any]) -> list[str]:
    cpu = env.get("cpu", {})
    lines = [
        f"- CPU: {cpu.get('model', '?')}; {env.get('cores')} cores ({env.get('cores_usable')} usable); "
        f"flags: {', '.join(cpu.get('flags', [])) or 'none of interest'}; torch CPU capability "
        f"{env.get('torch_cpu_capability')}"
    ]
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    lines.append(f"- Python {env.get('python')}; {versions}")
    lines.append(f"- onnxruntime providers: {', '.join(env.get('onnxruntime_providers') or []) or 'none'}")
    if env.get("env"):
        lines.append("- environment: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    lines.append(f"- load average at start: {env.get('loadavg_start')}, at end: {env.get('loadavg_end')}")
    gpu = env.get("gpu")
    if gpu:
        lines.append(
            f"- GPU: {gpu.get('name')} ×{gpu.get('count')}, capability {gpu.get('capability')}, "
            f"{gpu.get('memory_gb')} GiB, driver {gpu.get('driver')}, CUDA (torch) {gpu.get('torch_cuda')}, "
            f"float32 matmul precision {gpu.get('float32_matmul_precision')}"
        )
    return lines


def _peak_table(peaks: dict[str, Any]) -> list[str]:
    lines = ["| device | threads | kind | best | median | n | note |", "|---|---|---|---|---|---|---|"]
    for threads, table in (peaks.get("cpu") or {}).items():
        lines += [_peak_line("cpu", threads, kind, entry) for kind, entry in table.items()]
    for kind, entry in (peaks.get("cuda") or {}).items():
        if isinstance(entry, dict):
            lines.append(_peak_line("cuda", "–", kind, entry))
    return lines


def _forward_table(forward: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | role | backend | precision | device | graph | batch | seq | threads | p50 ms | p90 ms | p99 ms "
        "| CI ±% | settled | seq/s | GFLOP | eff. | RSS peak MB | GPU MB | accuracy | size MB |",
        "|---" * 21 + "|",
    ]
    for r in forward:
        seq = r["seq"] if r["seq"] is not None else f"mix (pad {r.get('length_mix', {}).get('mean_padded_len', 0):.0f})"
        ci = None if r.get("ci_rel_width") is None else 50 * r["ci_rel_width"]
        lines.append(
            f"| {r['model']} | {r['role']} | {r['backend']} | {r['precision']} | {r['device']} | "
            f"{'yes' if r.get('cuda_graph') else ''} | {r['batch']} | {seq} | {_fmt(r['threads'])} | "
            f"{_fmt(r['p50_ms'], 3)} | {_fmt(r['p90_ms'], 3)} | {_fmt(r['p99_ms'], 3)} | {_fmt(ci, 1)} | "
            f"{_fmt(r['settled'])} | {_fmt(r['throughput'], 1)} | {_gflop(r['flops'])} | {_pct(r['efficiency'])} | "
            f"{_fmt(r['peak_rss_mb'], 0)} | {_fmt(r.get('peak_gpu_mb'), 0)} | {_fmt(r['accuracy'], 3)} | "
            f"{_fmt(r['size_mb'], 1)} |"
        )
    return lines


def _tokenize_table(tokenize: list[dict[str, Any]]) -> list[str]:
    lines = ["| tokenizer of | batch | max length | p50 ms | p90 ms | settled | seq/s |", "|---" * 7 + "|"]
    for r in tokenize:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['seq']} | {_fmt(r['p50_ms'], 3)} | {_fmt(r['p90_ms'], 3)} | "
            f"{_fmt(r['settled'])} | {_fmt(r['throughput'], 1)} |"
        )
    return lines


def _not_run_lines(skipped: list[dict[str, Any]]) -> list[str]:
    """One line per distinct skip (the same reason at every cell is said once)."""
    lines: list[str] = []
    seen = set()
    for s in skipped:
        where = ", ".join(f"{k} {s[k]}" for k in ("batch", "seq", "threads") if s.get(k) is not None)
        graph = " (cuda graph)" if s.get("cuda_graph") else ""
        text = f"- {s['model']} {s['backend']} {s['precision']} {s['device']}{graph}"
        text += f"{' at ' + where if where else ''}: {s['reason']}"
        if text not in seen:
            seen.add(text)
            lines.append(text)
    return lines


def _peak_line(device: str, threads: str, kind: str, entry: Any) -> str:
    if not isinstance(entry, dict):
        return f"| {device} | {threads} | {kind} | {entry} | | | |"
    if "unavailable" in entry:
        return f"| {device} | {threads} | {kind} | – | – | – | unavailable: {entry['unavailable']} |"
    return (
        f"| {device} | {threads} | {kind} | {entry['gflops']:.1f} | {entry['median_gflops']:.1f} | {entry['n']} | "
        f"{entry['reps']} reps |"
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher),
    sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(doc: dict[str, Any], path: str | Path) -> Path | None:
    """Accuracy vs p50 of the forward rows with a known accuracy, marker area ∝ size; None if none.

    Only the cell (device, batch, seq, threads) with the most such rows is drawn, so every point
    was measured under the same conditions.
    """
    rows = [r for r in doc.get("results", []) if r.get("stage") == "forward" and r.get("accuracy") is not None]
    if not rows:
        return None
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["batch"], r["seq"], r["threads"]), []).append(r)
    cell, chosen = max(groups.items(), key=lambda kv: len(kv[1]))
    import matplotlib  # lazy: drawn only when rows have accuracies; benchmarks/gpu.sh's machine may lack matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib, and after choosing the Agg backend

    sizes = [r.get("size_mb") or 0.0 for r in chosen]
    largest = max(sizes) or 1.0
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs, ys = [r["p50_ms"] for r in chosen], [r["accuracy"] for r in chosen]
    models = list(dict.fromkeys(r["model"] for r in chosen))  # one colour per model, in the key
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    for model in models:
        mine = [i for i, r in enumerate(chosen) if r["model"] == model]
        ax.scatter([xs[i] for i in mine], [ys[i] for i in mine], s=[30 + 600 * sizes[i] / largest for i in mine],
                   alpha=0.6, color=colours[model], label=model)  # fmt: skip
    # every point says what it is; neighbours in latency take turns above and below, so labels do not overlap
    for rank, i in enumerate(sorted(range(len(chosen)), key=lambda i: xs[i])):
        r = chosen[i]
        ax.annotate(f"{r['backend']} {r['precision']}\n{sizes[i]:.1f} MB", (xs[i], ys[i]), fontsize=7,
                    xytext=(6, 8 if rank % 2 == 0 else -22), textcoords="offset points",
                    color=colours[r["model"]])  # fmt: skip
    front = pareto_front(list(zip(xs, ys, strict=True)))
    ax.step(
        [xs[i] for i in front], [ys[i] for i in front], "--", where="post", color="grey", lw=1, label="Pareto front"
    )
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.12)
    ax.set_xlabel("p50 latency (ms, log)")
    ax.set_ylabel("mean test accuracy")
    seq = cell[2] if cell[2] is not None else "length mix"
    ax.set_title(f"{cell[0]}, batch {cell[1]}, seq {seq}, threads {cell[3]} (marker area ∝ file size)", fontsize=9)
    ax.legend(fontsize=8, loc="best", markerscale=0.5)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def write_outputs(out_dir: str | Path, doc: dict[str, Any], *, plot: bool = True) -> dict[str, Path]:
    """results.json and results.md (and pareto.png when accuracies are known) in `out_dir`."""
    out = Path(out_dir)
    atomic_write_json(out / RESULTS_JSON, doc)
    atomic_write_text(out / RESULTS_MD, render_markdown(doc))
    written = {"json": out / RESULTS_JSON, "markdown": out / RESULTS_MD}
    if plot:
        png = plot_pareto(doc, out / PARETO_PNG)
        if png is not None:
            written["pareto"] = png
    return written
