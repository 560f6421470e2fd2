"""The speed check: the expected-speed table and its sources, matching a run to a figure, nvidia-smi output as the
check reads it, and the one warning a slow run gets (real progress sequences, fixture logs replayed through the
backends' parsers)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import get_args

import pytest

from backends import base
from orchestrator.envs import BackendEnv
from orchestrator.events import Event, Log, Phase, Progress
from orchestrator.job import Family, JobSpec
from orchestrator.speed import nvsmi
from orchestrator.speed.check import Findings, SpeedCheck, causes, for_run
from orchestrator.speed.table import (
    Figure,
    RunShape,
    card_key,
    expected_for,
    figures,
    parse_row,
    read_figures,
)

SMI = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-smi"
H100 = "NVIDIA H100 80GB HBM3"
SEGMENTED = "SEGMENTED_CHECKPOINTING.md"


class Clock:
    """Time as the trainer lived it: set by the test from the run's own record before each event."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def smi(name: str) -> str:
    return (SMI / name).read_text(encoding="utf-8")


def findings(gpus: str, apps: str | None, own: set[int] = frozenset()) -> Findings:  # type: ignore[assignment]
    gpu = nvsmi.parse_gpus(smi(gpus))[0]
    return Findings(gpu=gpu, apps=nvsmi.parse_apps(smi(apps)) if apps else None, own_pids=frozenset(own))


def check_for(gpu: str, run: RunShape, table: tuple[Figure, ...] | None = None, **kwargs) -> SpeedCheck:  # type: ignore[no-untyped-def]
    return SpeedCheck(expected_for(gpu, run, table), run=run, gpu_index=0, **kwargs)


def feed(check: SpeedCheck, clock: Clock, seconds: list[float], start: int = 1) -> list[Event]:
    """One Progress per step, each ``seconds[i]`` after the previous, as a live run delivers them."""
    out: list[Event] = []
    for i, s in enumerate(seconds):
        clock.now += s
        out += check.see(Progress(step=start + i, total=start + len(seconds), loss=0.1, it_per_s=1 / s))
    return out


# --- the table ------------------------------------------------------------------------------------------------


def test_the_table_loads_and_every_row_names_its_source() -> None:
    table = figures()
    assert len(table) >= 20
    families = set(get_args(Family))
    for f in table:
        assert f.source.startswith("https://") or f.source.startswith("measured with benchmarks/bench_gpu.py on ")
        assert f.family in families, f
        assert f.seconds > 0 and f.basis in ("warm", "run", "reported")
        assert f.notes, f"{f.describe()}: say the figure's settings (precision, options, what the step includes)"
    assert {"sdxl", "flux", "sd15", "sd3"} <= {f.family for f in table}
    assert {"H100", "L40S", "RTX 4090"} <= {f.gpu for f in table}


def test_a_row_without_a_source_or_with_a_bad_value_is_refused(tmp_path: Path) -> None:
    good = "H100\tsdxl\tkohya\t1024\t1\t1\tyes\tbf16\t1.0\t\twarm\tmeasured with benchmarks/bench_gpu.py on H100\tx"
    assert parse_row(good.split("\t"), "t:1").gpu == "H100"
    header = (Path(__file__).resolve().parents[2] / "orchestrator/speed/expected.tsv").read_text().splitlines()
    columns = next(line for line in header if line.startswith("gpu\t"))
    for bad, words in [
        (good.replace("measured with benchmarks/bench_gpu.py on H100", ""), "no source"),
        (good.replace("\tyes\t", "\tmaybe\t"), "checkpointing"),
        (good.replace("\t1.0\t", "\tfast\t"), "fast"),
        (good.replace("\twarm\t", "\tguess\t"), "basis"),
    ]:
        path = tmp_path / "t.tsv"
        path.write_text(f"{columns}\n{bad}\n")
        with pytest.raises(ValueError, match=words) as info:
            read_figures(path)
        assert "t.tsv:2" in str(info.value)


@pytest.mark.parametrize(
    ("name", "card"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA H100 NVL", "H100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 4090 Laptop GPU", None),  # a laptop card is far slower: not the desktop figure
        ("NVIDIA GeForce RTX 3090 Ti", "RTX 3090 Ti"),
        ("NVIDIA GeForce RTX 3090", None),  # never the Ti's figure
        ("Tesla T4", "T4"),
        ("NVIDIA A100-SXM4-80GB", None),  # no A100 figure in the table yet
        ("Radeon RX 7900 XTX", None),
    ],
)
def test_nvidia_smi_card_names_map_to_the_tables_cards(name: str, card: str | None) -> None:
    assert card_key(name, {f.gpu for f in figures()}) == card
    assert card_key("NVIDIA L4", {"L4", "L40S"}) == "L4" and card_key("NVIDIA L40S", {"L4", "L40S"}) == "L40S"


def test_the_closest_figure_is_used_and_scaled_never_below_what_a_step_can_take() -> None:
    sdxl = RunShape("sdxl", "simpletuner", 1024, checkpointing=True)
    exact = expected_for(H100, sdxl)
    assert exact is not None and exact.seconds == 1.080 and exact.scaling == "" and SEGMENTED in exact.figure.source
    off = expected_for(H100, RunShape("sdxl", "simpletuner", 1024, checkpointing=False))
    assert off is not None and off.seconds == 0.606  # the figure without checkpointing
    bigger = expected_for(H100, RunShape("sdxl", "simpletuner", 1024, batch=2))
    assert bigger is not None and bigger.seconds == pytest.approx(2.160) and "scaled linearly" in bigger.scaling
    smaller = expected_for(H100, RunShape("sdxl", "simpletuner", 768))
    assert smaller is not None and smaller.seconds == pytest.approx(1.080 * 0.75)  # sqrt of (768/1024)^2
    # kohya on H100: no kohya figure, SimpleTuner's is the closest and the warning will say so
    kohya = expected_for(H100, RunShape("sdxl", "kohya", 1024))
    assert kohya is not None and kohya.figure.backend == "simpletuner"


@pytest.mark.parametrize(
    ("gpu", "run", "why"),
    [
        (H100, RunShape("sdxl", "simpletuner", 1024, precision="fp32"), "fp32 is several times slower than bf16"),
        (H100, RunShape("sdxl", "simpletuner", 4096), "16x the pixels: too far to scale"),
        (H100, RunShape("sdxl", "simpletuner", 1024, batch=8), "8x the images: too far to scale"),
        (H100, RunShape("flux", "simpletuner", 1024), "only an fp8-training figure, which may be faster than bf16"),
        (H100, RunShape("flux2", "simpletuner", 1024), "no figure for the family"),
        ("NVIDIA A100-SXM4-80GB", RunShape("sdxl", "kohya", 1024), "no figure for the card"),
        ("NVIDIA GeForce RTX 3090 Ti", RunShape("sdxl", "kohya", 1024), "its only figure is without checkpointing"),
    ],
)
def test_nothing_close_enough_means_no_comparison(gpu: str, run: RunShape, why: str) -> None:
    assert expected_for(gpu, run) is None, why


# --- nvidia-smi output ----------------------------------------------------------------------------------------


def test_gpu_rows_parse_from_captured_output() -> None:
    (h100,) = nvsmi.parse_gpus(smi("gpus-h100-busy.csv"))
    assert (h100.index, h100.name, h100.used_mib, h100.total_mib, h100.utilization) == (0, H100, 31207, 81559, 98)
    assert h100.throttle == 0 and h100.driver_model is None and h100.slowing == []
    (wddm,) = nvsmi.parse_gpus(smi("gpus-rtx4090-wddm-full.csv"))
    assert wddm.driver_model == "WDDM" and wddm.name == "NVIDIA GeForce RTX 4090"
    (l40s,) = nvsmi.parse_gpus(smi("gpus-l40s-throttled.csv"))
    assert l40s.slowing == ["software power cap", "software thermal slowdown"]
    (t4,) = nvsmi.parse_gpus(smi("gpus-t4-basic-fields.csv"))
    assert (t4.name, t4.total_mib, t4.throttle, t4.driver_model) == ("Tesla T4", 15360, None, None)
    assert nvsmi.parse_gpus(smi("invalid-field.txt")) == [] and nvsmi.parse_gpus(smi("no-driver.txt")) == []


def test_the_runs_card_is_the_first_visible_one() -> None:
    node = nvsmi.parse_gpus(smi("gpus-8x-a100.csv"))
    assert len(node) == 8
    assert nvsmi.pick(node, None).index == 0  # type: ignore[union-attr]
    assert nvsmi.pick(node, "3,4").index == 3  # type: ignore[union-attr]
    assert nvsmi.pick(node, "GPU-31b2c3d4").index == 3  # type: ignore[union-attr]  # a UUID (prefix), as CUDA allows
    assert nvsmi.pick(node, "9") is None  # not a card of this node: no guess


def test_compute_apps_parse_with_windows_paths_and_missing_memory() -> None:
    linux = nvsmi.parse_apps(smi("apps-linux.csv"))
    assert [(a.pid, a.name, a.used_mib) for a in linux] == [(4242, "python", 30544), (5151, "/usr/bin/python3", 12020)]
    windows = nvsmi.parse_apps(smi("apps-windows-wddm.csv"))
    assert windows[1].name == r"C:\Program Files\Blender Foundation\Blender 4.1\blender.exe"
    assert windows[1].used_mib is None
    assert nvsmi.parse_apps(smi("apps-none.csv")) == []


# --- the check on a run ---------------------------------------------------------------------------------------


def test_a_normal_run_is_not_warned_about() -> None:
    clock = Clock()
    check = check_for(H100, RunShape("sdxl", "simpletuner", 1024), clock=clock)
    # start-up steps are slow (compilation, caches), then steady near the published 1.08 s/step with some jitter
    steps = [25.0, 6.0, 3.0] + [1.0, 1.3, 0.9, 1.2, 2.1, 1.0] * 30
    assert feed(check, clock, steps) == []
    assert len(check.samples) > check.window


def test_a_slow_run_warns_once_naming_the_figure_and_its_source() -> None:
    clock = Clock()
    probe_calls: list[int | None] = []

    def probe(index: int | None) -> Findings:
        probe_calls.append(index)
        return findings("gpus-h100-busy.csv", "apps-none.csv")

    check = check_for(H100, RunShape("sdxl", "simpletuner", 1024), clock=clock, probe=probe)
    events = feed(check, clock, [30.0] + [2.6] * 200)
    assert len(events) == 1 and probe_calls == [0]  # one warning, nvidia-smi asked once, when it was written
    (warning,) = events
    assert isinstance(warning, Log) and warning.level == "warning"
    assert "2.60 s/step" in warning.text and "2.4x the expected 1.08 s/step; figure: sdxl at 1024 px" in warning.text
    assert "https://github.com/bghira/SimpleTuner/blob/main/documentation/experimental/" + SEGMENTED in warning.text
    assert "gradient checkpointing on" in warning.text


def test_the_warning_waits_for_the_warmup_and_a_full_sample() -> None:
    clock = Clock()
    check = check_for(H100, RunShape("sdxl", "simpletuner", 1024), clock=clock, probe=lambda i: Findings())
    assert feed(check, clock, [60.0] * 11) == []  # all warm-up: never judged
    assert feed(check, clock, [2.6] * (check.min_samples - 1), start=12) == []  # not enough steps yet
    assert len(feed(check, clock, [2.6], start=11 + check.min_samples)) == 1


def test_repeated_readings_of_a_step_and_other_events_change_nothing() -> None:
    clock = Clock()
    check = check_for(H100, RunShape("sdxl", "simpletuner", 1024), clock=clock, probe=lambda i: Findings())
    for step in range(1, 40):
        clock.now += 1.0
        for event in (Progress(step), Progress(step, loss=0.2), Phase("training"), Log("info", "x")):
            assert check.see(event) == []
    assert len(check.samples) == 39 - 1 - check.warmup


@pytest.mark.parametrize("gpu", ["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090 Laptop GPU", "Radeon RX 7900 XTX"])
def test_an_unknown_card_or_family_says_nothing(gpu: str) -> None:
    clock = Clock()
    for check in (
        check_for(gpu, RunShape("sdxl", "simpletuner", 1024), clock=clock),
        check_for(H100, RunShape("flux2", "simpletuner", 1024), clock=clock),
    ):
        assert check.expected is None
        assert feed(check, clock, [50.0] * 100) == []


# --- fixture logs replayed through the backends' parsers ----------------------------------------------------------


def _test_table(tmp_path: Path, rows: list[str]) -> tuple[Figure, ...]:
    header = next(
        line
        for line in (Path(__file__).resolve().parents[2] / "orchestrator/speed/expected.tsv").read_text().splitlines()
        if line.startswith("gpu\t")
    )
    path = tmp_path / "expected.tsv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return read_figures(path)


def _row(family: str, backend: str, seconds: float) -> str:
    source = "measured with benchmarks/bench_gpu.py on H100"
    return f"H100\t{family}\t{backend}\t64\t1\t1\tyes\tbf16\t{seconds}\t\twarm\t{source}\ttest figure"


def kohya_replay(fixtures: Path, log: str) -> list[tuple[float, Event]]:
    """Events of a real sd-scripts log with the time each step ended: its bar shows the average since it started
    (tqdm smoothing=0), so step n of the bar ended n x s/it after the start."""
    parser = base.get("kohya").parser()
    events = parser.feed((fixtures / "logs" / "kohya" / log).read_bytes(), "stderr") + parser.finish(0)
    timed, now = [], 0.0
    for event in events:
        if isinstance(event, Progress) and event.it_per_s:
            now = event.step / event.it_per_s
        timed.append((now, event))
    return timed


def simpletuner_replay(fixtures: Path) -> list[tuple[float, Event]]:
    """Events of SimpleTuner's webhooks as a real run posted them, each at the time the receiver logged it."""
    parser = base.get("simpletuner").parser()
    timed = []
    for line in (fixtures / "logs" / "simpletuner" / "webhook_events.jsonl").read_text().splitlines():
        record = json.loads(line)
        timed += [(record["t"], event) for event in parser.payload(json.loads(record["body"]))]
    return timed


def replay(check: SpeedCheck, clock: Clock, timed: list[tuple[float, Event]]) -> list[Event]:
    out: list[Event] = []
    for at, event in timed:
        clock.now = at
        out += check.see(event)
    return out


@pytest.mark.parametrize("log", ["run1.log", "run2.log"])
def test_replayed_sd_scripts_logs_warn_only_when_slower_than_twice_the_figure(
    fixtures_dir: Path, tmp_path: Path, log: str
) -> None:
    timed = kohya_replay(fixtures_dir, log)
    assert sum(isinstance(e, Progress) for _, e in timed) == 4
    run = RunShape("sd15", "kohya", 64)
    small = {"warmup": 1, "window": 3, "min_samples": 2}
    for seconds, warned in [(0.5, True), (3.0, False)]:  # these CPU runs took 2.4-4.0 s a step after the first
        clock = Clock()
        table = _test_table(tmp_path, [_row("sd15", "kohya", seconds)])
        check = check_for(H100, run, table, clock=clock, probe=lambda i: Findings(), **small)
        warnings = replay(check, clock, timed)
        assert len(warnings) == (1 if warned else 0), (seconds, check.samples)
        if warned:
            assert "measured with benchmarks/bench_gpu.py on H100" in warnings[0].text  # type: ignore[union-attr]


def test_replayed_simpletuner_webhooks_warn_once(fixtures_dir: Path, tmp_path: Path) -> None:
    timed = simpletuner_replay(fixtures_dir)
    steps = [e.step for _, e in timed if isinstance(e, Progress)]
    assert steps == [7, 8, 9]  # a resumed run: the check counts from the first step it sees
    run = RunShape("sdxl", "simpletuner", 64)
    small = {"warmup": 0, "window": 3, "min_samples": 2}
    for seconds, count in [(0.05, 1), (0.1, 0)]:  # its steps took ~0.16 s
        clock = Clock()
        check = check_for(
            H100, run, _test_table(tmp_path, [_row("sdxl", "simpletuner", seconds)]), clock=clock, **small
        )
        check.probe = lambda i: Findings()
        assert len(replay(check, clock, timed)) == count


# --- causes, checked when the warning is written --------------------------------------------------------------


def _statuses(run: RunShape, found: Findings, options: dict | None = None) -> dict[str, str]:
    return {text.split(":")[0].split(" (")[0]: status for text, status in causes(run, found, options or {}, True)}


def test_a_full_card_under_wddm_is_named_first() -> None:
    clock = Clock()
    check = check_for(
        "NVIDIA GeForce RTX 4090",
        RunShape("flux", "simpletuner", 1024),
        clock=clock,
        probe=lambda i: findings("gpus-rtx4090-wddm-full.csv", "apps-windows-wddm.csv", {4242}),
    )
    (warning,) = feed(check, clock, [10.0] * 40)
    text = warning.text  # type: ignore[union-attr]
    first = text.split("(1) ")[1]
    assert first.startswith("GPU memory spilling into shared system memory") and "23.6 of 24.0 GiB" in first
    assert "WDDM" in first
    assert "blender.exe (pid 9120)" in text and "python.exe" not in text  # pid 4242 is the trainer
    assert "expected 3.50 s/step; figure: flux at 1024 px, batch 1, nf4" in text and "FLUX.md" in text


def test_throttling_other_processes_offload_and_a_waiting_card_are_found() -> None:
    sdxl = RunShape("sdxl", "kohya", 1024)
    throttled = _statuses(sdxl, findings("gpus-l40s-throttled.csv", "apps-linux.csv", {4242}))
    assert throttled["thermal or power throttling"] == "found"
    assert throttled["another process on the GPU"] == "found"
    assert throttled["memory spilling"] == "ruled out"
    waiting = _statuses(sdxl, findings("gpus-h100-waiting.csv", "apps-none.csv"))
    assert waiting["a data loader bound by a slow disk or too few workers"] == "found"
    assert waiting["other processes on the GPU"] == "ruled out" and waiting["throttling"] == "ruled out"
    # SDXL trained without checkpointing in 13 GiB; an 80 GiB card does not need it
    assert waiting["gradient checkpointing on a model that fits without it"] == "found"
    offload = _statuses(sdxl, Findings(), {"fp8_base": True, "blocks_to_swap": 0})
    assert offload["CPU offload or a quantised / offloaded model or text encoder"] == "found"
    texts = [t for t, _ in causes(sdxl, Findings(), {"fp8_base": True, "blocks_to_swap": 0}, True)]
    assert any("fp8_base=True" in t for t in texts) and not any("blocks_to_swap" in t for t in texts)
    unknown = _statuses(sdxl, Findings())
    assert set(unknown.values()) == {"open"}  # nothing could be asked: every cause stays possible


def test_other_processes_in_another_pid_namespace_are_counted_not_named() -> None:
    sdxl = RunShape("sdxl", "kohya", 1024)
    texts = dict(causes(sdxl, findings("gpus-h100-busy.csv", "apps-linux.csv", {1}), {}, True))
    assert "another process on the GPU: found, 1 besides the trainer (process ids from another namespace)" in texts


# --- the run's check: nvidia-smi asked once on CUDA, never on CPU ---------------------------------------------------


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An nvidia-smi on PATH that prints the captured output named by $FAKE_SMI_GPUS and logs its arguments."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "args = ' '.join(sys.argv[1:])\n"
        "open(os.environ['FAKE_SMI_LOG'], 'a').write(args + '\\n')\n"
        "if 'clocks_throttle_reasons' in args and os.environ.get('FAKE_SMI_OLD'):\n"
        f"    print(open({str(SMI / 'invalid-field.txt')!r}).read()); sys.exit(2)\n"
        "print(open(os.environ['FAKE_SMI_GPUS']).read(), end='')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SMI_LOG", str(tmp_path / "calls.log"))
    return tmp_path / "calls.log"


def _job(family: str = "sdxl") -> JobSpec:
    return JobSpec.model_validate(
        {"name": "t", "base_model": "m", "dataset": "d", "family": family, "training": {"steps": 100}}
    )


def test_on_cpu_nvidia_smi_is_never_asked(fake_smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SMI_GPUS", str(SMI / "gpus-h100-busy.csv"))
    check = for_run(_job(), "kohya", BackendEnv("kohya", Path("python"), device="cpu"), {})
    assert check.expected is None and not fake_smi.exists()


def test_on_cuda_the_runs_card_is_asked_for_once(fake_smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SMI_GPUS", str(SMI / "gpus-h100-busy.csv"))
    check = for_run(_job(), "simpletuner", BackendEnv("simpletuner", Path("python"), device="cuda"), {})
    assert check.expected is not None and check.expected.seconds == 1.080
    assert fake_smi.read_text().count("--query-gpu") == 1
    monkeypatch.setenv("FAKE_SMI_GPUS", str(SMI / "gpus-8x-a100.csv"))
    pinned = for_run(_job(), "kohya", BackendEnv("kohya", Path("python"), device="cuda"), {"CUDA_VISIBLE_DEVICES": "3"})
    assert pinned.gpu_index == 3 and pinned.expected is None  # an A100: no figure yet, so silent


def test_an_old_driver_gets_the_basic_query(fake_smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SMI_GPUS", str(SMI / "gpus-t4-basic-fields.csv"))
    monkeypatch.setenv("FAKE_SMI_OLD", "1")
    (t4,) = nvsmi.query_gpus()
    assert t4.name == "Tesla T4" and t4.throttle is None
    calls = fake_smi.read_text().splitlines()
    assert len(calls) == 2 and "clocks_throttle_reasons" in calls[0] and "clocks_throttle_reasons" not in calls[1]


# --- the GPU benchmark's rows feed the table ----------------------------------------------------------------------


def _bench():  # type: ignore[no-untyped-def]
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_the_benchmarks_rows_load_into_the_table_and_match_the_card() -> None:
    bench = _bench()
    arms = [
        bench.Arm("flux", "simpletuner", "orchestrated", status="ok", s_per_step=1.31),
        bench.Arm("flux", "simpletuner", "direct", status="ok", s_per_step=1.25, peak_gpu_mib=40960),
        bench.Arm("flux", "kohya", "direct", status="failed", reason="exit 2"),
    ]
    (row,) = bench.rows(arms, "NVIDIA H100 80GB HBM3", 1024, 20, 5)
    figure = parse_row(row.split("\t"), "bench")
    assert (figure.gpu, figure.family, figure.seconds, figure.peak_gib) == ("H100", "flux", 1.25, 40.0)
    assert figure.source == "measured with benchmarks/bench_gpu.py on NVIDIA H100 80GB HBM3"
    assert "orchestrated 1.31 s/step" in figure.notes
    # once in the table, a bf16 Flux run on an H100 has a figure to be compared with
    run = RunShape("flux", "simpletuner", 1024)
    assert expected_for(H100, run, (*figures(), figure)).figure == figure  # type: ignore[union-attr]
    assert bench.short_card("NVIDIA A100-SXM4-80GB") == "A100" and bench.short_card("Tesla T4") == "T4"


def test_the_benchmarks_tiny_configs_shrink_only_published_settings() -> None:
    bench = _bench()
    for family, parts in bench.TINY.items():
        for part, settings in parts.items():
            assert set(settings) <= set(bench.PUBLISHED[family][part]), (family, part)
