// A small loss chart on a canvas: raw points faint, an exponential moving average on top, optional log scale,
// validation loss as dots, and vertical markers (the overfitting turn). No library: nothing fetched at run time.
"use strict";

const COLOURS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea"];

class LossChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.series = []; // {name, colour, points: [[step, loss]], validation: [[step, loss]]}
    this.markers = []; // {step, label}
    this.smoothing = 0.6;
    this.log = false;
  }

  set(series, markers) {
    this.series = series;
    this.markers = markers || [];
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const ctx = canvas.getContext("2d");
    const width = canvas.width, height = canvas.height;
    const pad = { left: 60, right: 16, top: 12, bottom: 28 };
    ctx.clearRect(0, 0, width, height);
    const all = this.series.flatMap((s) => s.points.concat(s.validation || []));
    canvas.dataset.points = String(this.series.reduce((n, s) => n + s.points.length, 0));
    if (!all.length) {
      ctx.fillStyle = "#667085";
      ctx.font = "14px system-ui, sans-serif";
      ctx.fillText("no loss reported yet", pad.left, height / 2);
      return;
    }
    const value = (y) => (this.log ? Math.log10(Math.max(y, 1e-8)) : y);
    const steps = all.map((p) => p[0]), values = all.map((p) => value(p[1]));
    const min = (a) => a.reduce((m, v) => (v < m ? v : m), Infinity);
    const max = (a) => a.reduce((m, v) => (v > m ? v : m), -Infinity);
    const x0 = min(steps), x1 = Math.max(max(steps), x0 + 1);
    let y0 = min(values), y1 = max(values);
    if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
    const X = (s) => pad.left + ((s - x0) / (x1 - x0)) * (width - pad.left - pad.right);
    const Y = (v) => height - pad.bottom - ((v - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);

    ctx.strokeStyle = "#dde2ea";
    ctx.fillStyle = "#667085";
    ctx.font = "12px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = y0 + ((y1 - y0) * i) / 4, y = Y(v);
      ctx.beginPath(); ctx.moveTo(pad.left, y); ctx.lineTo(width - pad.right, y); ctx.stroke();
      const label = this.log ? Math.pow(10, v).toPrecision(3) : v.toPrecision(3);
      ctx.fillText(label, 4, y + 4);
    }
    ctx.fillText(`step ${x0}`, pad.left, height - 8);
    ctx.fillText(`step ${x1}`, width - pad.right - 70, height - 8);

    this.series.forEach((s, index) => {
      const colour = s.colour || COLOURS[index % COLOURS.length];
      ctx.globalAlpha = 0.25;
      this.line(ctx, s.points.map(([st, y]) => [X(st), Y(value(y))]), colour, 1);
      ctx.globalAlpha = 1;
      let ema = null;
      const smooth = s.points.map(([st, y]) => {
        ema = ema === null ? y : this.smoothing * ema + (1 - this.smoothing) * y;
        return [X(st), Y(value(ema))];
      });
      this.line(ctx, smooth, colour, 2);
      ctx.fillStyle = colour;
      for (const [st, y] of s.validation || []) {
        ctx.beginPath(); ctx.arc(X(st), Y(value(y)), 4, 0, 2 * Math.PI); ctx.fill();
      }
    });
    if (this.series.length === 1 && (this.series[0].validation || []).length) {
      ctx.fillStyle = this.series[0].colour || COLOURS[0];
      ctx.beginPath(); ctx.arc(pad.left + 12, pad.top + 6, 4, 0, 2 * Math.PI); ctx.fill();
      ctx.fillText("validation loss", pad.left + 20, pad.top + 10);
    }
    if (this.series.length > 1) {  // a legend: which colour is which run
      let x = pad.left + 8;
      this.series.forEach((s, index) => {
        ctx.fillStyle = s.colour || COLOURS[index % COLOURS.length];
        ctx.fillRect(x, pad.top + 4, 12, 3);
        ctx.fillText(s.name, x + 16, pad.top + 9);
        x += 28 + ctx.measureText(s.name).width;
      });
    }
    for (const marker of this.markers) {
      const x = X(marker.step);
      ctx.strokeStyle = "#dc2626"; ctx.setLineDash([5, 4]);
      ctx.beginPath(); ctx.moveTo(x, pad.top); ctx.lineTo(x, height - pad.bottom); ctx.stroke();
      ctx.setLineDash([]); ctx.fillStyle = "#dc2626"; ctx.fillText(marker.label, Math.min(x + 4, width - 160), pad.top + 12);
    }
  }

  line(ctx, points, colour, width) {
    if (!points.length) return;
    ctx.strokeStyle = colour; ctx.lineWidth = width;
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
  }
}

// wire a chart to its smoothing slider and log-scale box
function chartControls(chart) {
  const smoothing = document.getElementById("smoothing"), log = document.getElementById("logscale");
  smoothing.addEventListener("input", () => { chart.smoothing = Number(smoothing.value); chart.draw(); });
  log.addEventListener("change", () => { chart.log = log.checked; chart.draw(); });
  chart.smoothing = Number(smoothing.value);
}
