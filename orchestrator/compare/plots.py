"""Loss curves of every arm on one chart, as PNG bytes (matplotlib, imported only here)."""

from __future__ import annotations

import io

from orchestrator.compare.rundata import ArmData


def loss_curves_png(arms: list[ArmData]) -> bytes | None:
    """One line per arm (raw loss faint, its moving average bold when there are enough steps); None if no arm
    reported a loss."""
    with_loss = [arm for arm in arms if arm.loss_curve]
    if not with_loss:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)  # never a GUI window, also under a display
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, arm in enumerate(with_loss):
        color = colors[i % len(colors)]
        steps = [s for s, _ in arm.loss_curve]
        losses = [v for _, v in arm.loss_curve]
        if len(steps) >= 20:
            ax.plot(steps, losses, color=color, alpha=0.25, linewidth=1)
            ax.plot(steps, _ema(losses, 0.9), color=color, linewidth=2, label=arm.label)
        else:
            ax.plot(steps, losses, color=color, marker="o", linewidth=2, label=arm.label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (as the backend reports it)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _ema(values: list[float], decay: float) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled towards zero."""
    out: list[float] = []
    avg = 0.0
    for i, value in enumerate(values):
        avg = decay * avg + (1 - decay) * value
        out.append(avg / (1 - decay ** (i + 1)))
    return out
