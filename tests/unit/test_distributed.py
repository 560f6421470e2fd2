"""Several processes: the rendered accelerate configs, and the parsers on interleaved multi-rank output.

Synthetic output follows what torch 2.13/2.14 printed for a real 2-process gloo run (rank-prefixed tracebacks, the
launcher's Root Cause block); tests/fixtures/ddp holds two real runs' raw output, read here byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backends.kohya import KohyaBackend, KohyaLogParser
from backends.simpletuner import SimpleTunerLogParser
from orchestrator.dataset.model import load_dataset
from orchestrator.distributed import RankWatch, split_rank
from orchestrator.envs import BackendEnv
from orchestrator.errors import LoraforgeError
from orchestrator.events import Event, Failure, Progress
from orchestrator.job import build_job
from orchestrator.runs import create_run

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ddp"


def kohya_job(tmp_path: Path, **distributed: int):  # type: ignore[no-untyped-def]
    from PIL import Image

    (tmp_path / "data").mkdir(exist_ok=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "data" / "a.png")
    return build_job(
        {
            "name": "me",
            "base_model": "stabilityai/stable-diffusion-xl-base-1.0",
            "family": "sdxl",
            "dataset": str(tmp_path / "data"),
            "training": {"steps": 10, "precision": "bf16", "seed": 7},
            "distributed": distributed,
            "output": {"dir": str(tmp_path / "runs")},
        }
    )


def rendered_accelerate(tmp_path: Path, *, cpu: bool, **distributed: int) -> dict:
    job = kohya_job(tmp_path, **distributed)
    env = BackendEnv("kohya", Path("/envs/kohya/bin/python"), device="cpu" if cpu else "cuda")
    rendered = KohyaBackend().render(job, load_dataset(job.dataset), create_run(job, "kohya"), env)
    return yaml.safe_load(rendered.files["accelerate"].read_text())


def test_kohya_several_gpus_on_one_node(tmp_path: Path) -> None:
    config = rendered_accelerate(tmp_path, cpu=False, gpus=2)
    assert (config["distributed_type"], config["num_processes"], config["num_machines"]) == ("MULTI_GPU", 2, 1)
    assert config["use_cpu"] is False and config["mixed_precision"] == "bf16"
    assert config["main_process_ip"] == "127.0.0.1" and 0 < config["main_process_port"] < 65536
    assert config["dynamo_config"] == {} and config["gpu_ids"] == "all"  # nothing left to a default config


def test_kohya_several_nodes_agree_on_a_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "node-a")  # what the Slurm job script exports on every node
    for node in (0, 1):
        monkeypatch.setenv("SLURM_NODEID", str(node))
        config = rendered_accelerate(tmp_path, cpu=False, gpus=2, nodes=2)
        assert (config["num_processes"], config["num_machines"], config["machine_rank"]) == (4, 2, node)
        assert config["main_process_ip"] == "node-a"
        assert config["main_process_port"] == 29507  # the same on every node: 29500 + seed % 1000


def test_several_nodes_outside_slurm_are_refused_with_the_way_to_start_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURM_NODEID", raising=False)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(LoraforgeError, match="rank and the main node's address are unknown") as info:
        rendered_accelerate(tmp_path, cpu=False, gpus=2, nodes=2)
    assert "loraforge submit JOB --nodes 2" in (info.value.hint or "")


def test_kohya_one_cpu_process(tmp_path: Path) -> None:
    config = rendered_accelerate(tmp_path, cpu=True)
    assert (config["distributed_type"], config["num_processes"], config["use_cpu"]) == ("NO", 1, True)
    assert config["mixed_precision"] == "no"


def test_kohya_several_cpu_processes_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(LoraforgeError) as info:
        rendered_accelerate(tmp_path, cpu=True, gpus=2)
    assert "several CPU processes" in info.value.message and "DistributedDataParallel" in info.value.message
    assert "--gpus 1" in (info.value.hint or "") and "--backend simpletuner" in (info.value.hint or "")


def test_split_rank() -> None:
    assert split_rank("[rank1]: ValueError: boom") == (1, "ValueError: boom")
    assert split_rank("[rank0]:[E1129 01:00:00.0 1 ProcessGroupNCCL.cpp:1] Watchdog") == (
        0,
        "[E1129 01:00:00.0 1 ProcessGroupNCCL.cpp:1] Watchdog",
    )
    assert split_rank("steps:  50%|█| 2/4") == (None, "steps:  50%|█| 2/4")


# --- parsers on interleaved ranks --------------------------------------------------------------------------------

ROOT_CAUSE = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-29_01:39:45
  host      : localhost
  rank      : {rank} (local_rank: {rank})
  exitcode  : {exitcode} (pid: 13424)
  error_file: <N/A>
============================================================
"""

RANK1_FAILS = (
    "[rank1]: Traceback (most recent call last):\n"
    '[rank1]:   File "train.py", line 9, in <module>\n'
    '[rank1]:     raise ValueError("boom on rank 1")\n'
    "[rank1]: ValueError: boom on rank 1\n"
    "[rank0]: Traceback (most recent call last):\n"
    "[rank0]:     work.wait()\n"
    "[rank0]: RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:23237. "
    "This is typically caused by a remote worker crashing.\n" + ROOT_CAUSE.format(rank=1, exitcode=1)
)


def feed(parser, pieces: list[tuple[str, str]], chunk: int = 7) -> list[Event]:  # type: ignore[no-untyped-def]
    """Feed (stream, text) pieces in small chunks, as pipes deliver them."""
    events: list[Event] = []
    for stream, text in pieces:
        data = text.encode()
        for i in range(0, len(data), chunk):
            events.extend(parser.feed(data[i : i + chunk], stream))
    return events


KOHYA_BARS = [
    ("stderr", "steps:  25%|██▌       | 1/4 [00:02<00:06,  2.00s/it]\r"),
    ("stderr", "steps:  25%|██▌       | 1/4 [00:02<00:06,  2.00s/it, avr_loss=0.5]\r"),
    # a rank-1 line carrying its own bar (as if it drew one): never progress
    ("stderr", "[rank1]: steps:  75%|███████▌  | 3/4 [00:02<00:06,  2.00s/it, avr_loss=0.9]\n"),
    ("stderr", "steps:  50%|█████     | 2/4 [00:04<00:04,  2.00s/it, avr_loss=0.5]\r"),
    ("stderr", "steps:  50%|█████     | 2/4 [00:04<00:04,  2.00s/it, avr_loss=0.6]\r"),
]


def test_kohya_counts_rank0_progress_and_names_the_failing_rank() -> None:
    parser = KohyaLogParser()
    events = feed(parser, [*KOHYA_BARS, ("stderr", RANK1_FAILS)])
    events += parser.finish(1)
    assert [(e.step, e.loss) for e in events if isinstance(e, Progress)] == [(1, 0.5), (2, 0.6)]  # one per step
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.message == "sd-scripts failed on rank 1: ValueError: boom on rank 1"
    assert any(line.startswith("[rank1]: ") for line in failure.log_tail)  # the user sees whose lines they are


def test_simpletuner_counts_rank0_progress_and_names_the_failing_rank() -> None:
    parser = SimpleTunerLogParser()
    bar = "Epoch 1/2, Steps:  {p}%|█| {n}/4 [00:01<00:03,  1.00s/it, lr=0.0001, step_loss={loss}]\r"
    pieces = [
        ("stderr", bar.format(p=25, n=1, loss=1.0)),
        ("stderr", bar.format(p=25, n=1, loss=1.1)),
        ("stdout", "[RANK 0] 2026-11-29 01:44:05,016 [INFO] Reloading bucket manager cache on subprocesses.\n"),
        ("stderr", "[rank1]: " + bar.format(p=75, n=3, loss=9.9).replace("\r", "\n")),
        ("stderr", bar.format(p=50, n=2, loss=1.1)),
        ("stderr", bar.format(p=50, n=2, loss=1.2)),
        ("stderr", RANK1_FAILS),
    ]
    events = feed(parser, pieces) + parser.finish(1)
    assert [(e.step, e.loss) for e in events if isinstance(e, Progress)] == [(1, 1.1), (2, 1.2)]  # one per step
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.message == "SimpleTuner failed on rank 1: ValueError: boom on rank 1"
    assert failure.kind == "other"
    assert any(line.startswith("[rank1]: ") for line in failure.log_tail)  # the user sees whose lines they are


def test_a_collective_timeout_is_its_own_kind() -> None:
    parser = SimpleTunerLogParser()
    text = (
        "[rank0]:[E1129 01:00:00.000 1 ProcessGroupNCCL.cpp:632] [Rank 0] Watchdog caught collective operation "
        "timeout: WorkNCCL(SeqNum=9, OpType=ALLREDUCE) ran for 600000 milliseconds before timing out.\n"
        "[rank0]: RuntimeError: NCCL communicator was aborted on rank 0.\n" + ROOT_CAUSE.format(rank=0, exitcode=-6)
    )
    events = feed(parser, [("stderr", text)]) + parser.finish(1)
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.kind == "distributed" and "rank 0" in failure.message
    assert "ddp_timeout_minutes" in (failure.hint or "")


def test_a_rank_killed_without_a_word_is_named() -> None:
    """The system killed rank 1 (no traceback); rank 0 only reports the lost peer: rank 1 is the one to name."""
    parser = KohyaLogParser()
    text = "[rank0]: RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:6318.\n" + ROOT_CAUSE.format(
        rank=1, exitcode=-9
    )
    events = feed(parser, [("stderr", text)]) + parser.finish(1)
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.kind == "killed" and failure.message == "sd-scripts: rank 1 was killed by signal 9"
    assert "RAM" in (failure.hint or "")


def test_one_process_runs_are_untouched() -> None:
    watch = RankWatch()
    for line in ["Traceback (most recent call last):", "ValueError: boom"]:
        watch.see(None, line)
    assert watch.failure() is None
    parser = KohyaLogParser()
    events = feed(parser, [("stderr", "Traceback (most recent call last):\nValueError: bad value\n")]) + parser.finish(
        1
    )
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.message == "sd-scripts failed: ValueError: bad value"


# --- real runs' raw output ---------------------------------------------------------------------------------------


def replay(parser, folder: Path, chunk: int = 4096) -> list[Event]:  # type: ignore[no-untyped-def]
    """Both streams of a saved run, chunk by chunk, alternating (the order two pipes may arrive in)."""
    streams = {name: (folder / f"{name}.log").read_bytes() for name in ("stdout", "stderr")}
    events: list[Event] = []
    for offset in range(0, max(len(data) for data in streams.values()), chunk):
        for name, data in streams.items():
            if offset < len(data):
                events.extend(parser.feed(data[offset : offset + chunk], name))
    return events


def test_real_simpletuner_two_process_run_is_one_progress_stream() -> None:
    """SimpleTuner 4.10.1, tiny SDXL, 2 CPU processes (gloo), 4 steps of batch 1 over 4 images (2 epochs)."""
    parser = SimpleTunerLogParser()
    events = replay(parser, FIXTURES / "simpletuner-2cpu") + parser.finish(0)
    progress = [e for e in events if isinstance(e, Progress)]
    steps = [e.step for e in progress]
    assert steps == sorted(steps) and steps[-1] == 4
    assert [e.step for e in progress if e.loss is not None] == [1, 2, 3, 4]  # each step read once
    assert {e.total for e in progress} == {4} and progress[-1].epochs == 2
    assert not any(isinstance(e, Failure) for e in events)


def test_real_kohya_two_process_failure_names_the_rank() -> None:
    """sd-scripts 48d368fa, 2 CPU processes: both ranks refuse to wrap the frozen U-Net; torchrun names rank 1."""
    parser = KohyaLogParser()
    events = replay(parser, FIXTURES / "kohya-2cpu-fail") + parser.finish(1)
    assert not any(isinstance(e, Progress) for e in events)
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.message.startswith(
        "sd-scripts failed on rank 1: RuntimeError: DistributedDataParallel is not needed"
    )
    assert failure.kind == "other"
