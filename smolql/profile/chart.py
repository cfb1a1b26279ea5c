"""Profiles as a table and as an accuracy-vs-throughput plot with the Pareto frontier."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from smolql.profile.run import PlanProfile, Report


def pareto(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which (throughput, accuracy) points no other point beats on both axes.

    >>> pareto([(100, 0.9), (200, 0.8), (150, 0.7), (100, 0.85)])
    [True, True, False, False]
    """
    return [
        not any(
            (t2 >= t and a2 >= a) and (t2 > t or a2 > a)
            for j, (t2, a2) in enumerate(points)
            if j != i
        )
        for i, (t, a) in enumerate(points)
    ]


def frontier(report: Report) -> list[bool]:
    return pareto([(p.measured_per_s, p.accuracy) for p in report.profiles])


def as_table(report: Report) -> pa.Table:
    """One row per plan, fastest first, with the stage costs and the cost model's error."""
    marks = frontier(report)
    order = sorted(range(len(report.profiles)), key=lambda i: -report.profiles[i].measured_per_s)
    rows: list[tuple[PlanProfile, bool]] = [(report.profiles[i], marks[i]) for i in order]
    return pa.table(
        {
            "plan": [p.plan.describe() for p, _ in rows],
            "accuracy": [f"{p.accuracy:.3f}" for p, _ in rows],
            "correct": [f"{p.correct}/{p.images}" for p, _ in rows],
            "decode_ms": [f"{p.decode_ms:.2f}" for p, _ in rows],
            "resize_ms": [f"{p.resize_ms:.2f}" for p, _ in rows],
            "infer_ms": [f"{p.infer_ms:.2f}" for p, _ in rows],
            "img_per_s": [f"{p.measured_per_s:.1f}" for p, _ in rows],
            "predicted": [f"{p.predicted_per_s:.1f}" for p, _ in rows],
            "error": [f"{100 * p.error:+.1f}%" for p, _ in rows],
            "pareto": ["*" if m else "" for _, m in rows],
            "reference": ["ref" if p.reference else "" for p, _ in rows],
        }
    )


def plot(report: Report, path: str, title: str | None = None) -> str:
    """Write the accuracy-vs-throughput scatter (PNG) with the frontier drawn; returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    marks = frontier(report)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    models = sorted({p.plan.model for p in report.profiles})
    colours = plt.get_cmap("tab10")
    for m_i, model in enumerate(models):
        pts = [p for p in report.profiles if p.plan.model == model]
        for p in pts:
            marker = "o" if p.plan.source == "original" else "s"
            face = colours(m_i % 10) if p.plan.precision != "int8" else "white"
            ax.scatter(
                p.measured_per_s,
                p.accuracy,
                marker=marker,
                facecolors=face,
                edgecolors=colours(m_i % 10),
                s=40,
            )
        ax.scatter([], [], color=colours(m_i % 10), label=model)
    front = sorted(
        (p.measured_per_s, p.accuracy) for p, m in zip(report.profiles, marks, strict=True) if m
    )
    ax.plot([t for t, _ in front], [a for _, a in front], "k--", lw=1, label="Pareto frontier")
    for p, m in zip(report.profiles, marks, strict=True):
        if m:
            source = p.plan.source if p.plan.scale == 1 else f"{p.plan.source} 1/{p.plan.scale}"
            ax.annotate(
                f"{source} {p.plan.input_size or ''} {p.plan.precision}".replace("  ", " "),
                (p.measured_per_s, p.accuracy),
                fontsize=7,
                xytext=(4, -8),
                textcoords="offset points",
            )
    ax.set_xlabel("end-to-end throughput (images/s, measured)")
    ax.set_ylabel(f"accuracy ({report.basis})")
    ax.set_title(title or f"SmolQL plans for catalog {report.catalog!r} ({report.sample} images)")
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=8, title="circle: original, square: rendition, hollow: int8", title_fontsize=7
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
