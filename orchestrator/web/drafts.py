"""A new LoRA from photos, one step at a time, each step the CLI's own call (nothing re-implemented):

    upload (uploads.py) -> prep (prepare_dataset) -> captions (caption_dataset; edits through captions.files)
    -> plan (a preset layer + the form's settings -> build_job -> preflight: the step plan) -> start (the queue)

The job is built the way ``loraforge train PHOTOS`` builds it (orchestrator/oneshot.py): built-in defaults < the
subject x family preset (or the one picked) < the form < its ``KEY=VALUE`` lines, like ``--set``.

A draft is a folder in the store folder: photos/ (uploads), dataset/ (prep's output with the captions, what the
trainer reads), settings.json (the form as last planned).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

from orchestrator.errors import BackendNotReady, LoraforgeError
from orchestrator.job import JobSpec, build_job, dump_job, merge_layers, parse_assignment
from orchestrator.web.paths import child, inside
from orchestrator.web.responses import HttpError

FORM_FIELDS = (
    "name",
    "subject",
    "trigger",
    "base_model",
    "family",
    "backend",
    "preset",
    "steps",
    "rank",
    "learning_rate",
    "resolution",
    "set",
    "executor",
)


class Drafts:
    def __init__(self, root: Path, runs_root: Path) -> None:
        self.root = root
        self.runs_root = runs_root
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def create(self) -> str:
        draft = uuid.uuid4().hex[:12]
        (self.root / draft / "photos").mkdir(parents=True)
        return draft

    def folder(self, draft: str) -> Path:
        return child(self.root, draft)

    def lock(self, draft: str) -> threading.Lock:
        """One step at a time per draft (a second prep while one runs would race on its folder)."""
        with self._guard:
            return self._locks.setdefault(draft, threading.Lock())

    def photos(self, draft: str) -> Path:
        return self.folder(draft) / "photos"

    def dataset(self, draft: str) -> Path:
        return self.folder(draft) / "dataset"

    def file(self, draft: str, relative: str) -> Path:
        """A photo or a prepared image of the draft, for the page to show."""
        return inside(self.folder(draft), relative)

    # --- prep -------------------------------------------------------------------------------------------------
    def prep(self, draft: str, *, subject: str, size: int, crop: str) -> dict[str, Any]:
        from orchestrator.dataset.prep import prepare_dataset

        photos, dataset = self.photos(draft), self.dataset(draft)
        if not any(photos.iterdir()):
            raise HttpError(400, "no photos uploaded yet", "drop photos (or a zip of them) on the page first")
        with self.lock(draft):
            result = prepare_dataset(photos, dataset, subject=subject, size=size, crop=crop)
        entries = []
        for entry in result.entries:
            source = Path(entry["source"])
            entries.append(
                {
                    "source": _relative(source, photos),
                    "verdict": entry["verdict"],
                    "reasons": entry.get("reasons") or [],
                    "output": Path(entry["output"]).name if entry.get("output") else None,
                    "thumbnail": entry.get("thumbnail"),
                    "original_size": entry.get("original_size"),
                    "crop_box": entry.get("crop_box"),
                    "faces": entry.get("faces"),
                }
            )
        return {"accepted": result.accepted, "advice": result.advice, "entries": entries, "subject": subject}

    # --- captions ---------------------------------------------------------------------------------------------
    def caption(
        self, draft: str, *, captioner: str, trigger: str | None, template: str | None, overwrite: bool
    ) -> list[dict[str, Any]]:
        from orchestrator.captions import caption_dataset

        dataset = self._prepared(draft)
        options: dict[str, Any] = {"template": template} if template else {}
        with self.lock(draft):
            caption_dataset(
                dataset,
                captioner=captioner,
                trigger=trigger or None,
                mode="overwrite" if overwrite else "keep",
                **options,
            )
        return self.captions(draft)

    def captions(self, draft: str) -> list[dict[str, Any]]:
        from orchestrator.captions.review import list_captions

        return [{"image": e.image, "caption": e.caption} for e in list_captions(self._prepared(draft))]

    def edit(self, draft: str, changes: dict[str, Any]) -> list[str]:
        """Write the captions that changed (images named as the captions list names them)."""
        from orchestrator.captions.files import one_line, write_caption
        from orchestrator.captions.review import list_captions

        dataset = self._prepared(draft)
        known = {e.image: e.caption or "" for e in list_captions(dataset)}
        unknown = [image for image in changes if image not in known]
        if unknown:
            raise HttpError(400, f"no image {unknown[0]!r} in this dataset")
        changed = []
        with self.lock(draft):
            for image, text in changes.items():
                caption = one_line(str(text))
                if caption != known[image]:
                    write_caption(inside(dataset, image), caption)
                    changed.append(image)
        return changed

    def _prepared(self, draft: str) -> Path:
        dataset = self.dataset(draft)
        if not dataset.is_dir():
            raise HttpError(400, "the photos are not prepared yet", "run prep first")
        return dataset

    # --- plan and start ---------------------------------------------------------------------------------------
    def job(self, draft: str, form: dict[str, Any]) -> tuple[JobSpec, str]:
        """The job the form describes, and its backend."""
        from orchestrator.basemodel import infer_family
        from orchestrator.presets import load_preset_layer, preset_for

        dataset = self._prepared(draft)
        form = {key: form.get(key) for key in FORM_FIELDS}
        base_model = str(form["base_model"] or "").strip()
        if not base_model:
            raise LoraforgeError("a LoRA needs a base model", "a local file or folder, or a hub id")
        subject = str(form["subject"] or "face")
        family = form["family"] or infer_family(base_model)
        if family is None:
            raise LoraforgeError(f"cannot tell the model family of {base_model}", "pick the family in the form")
        preset = str(form["preset"] or "") or preset_for(subject, family)
        name = str(form["name"] or "").strip() or re.sub(r"[^A-Za-z0-9._-]+", "_", str(form["trigger"] or "lora"))
        fields: dict[str, Any] = {
            "name": name.strip("._-") or "lora",
            "base_model": base_model,
            "subject": subject,
            "family": family,
            "trigger": form["trigger"] or None,
            "dataset": str(dataset),
            "output": {"dir": str(self.runs_root)},
        }
        training = {key: form[key] for key in ("steps", "learning_rate", "resolution") if form[key] not in (None, "")}
        if training:
            fields["training"] = training
        if form["rank"] not in (None, ""):
            fields["network"] = {"rank": form["rank"]}
        lines = [line.strip() for line in str(form["set"] or "").splitlines() if line.strip()]
        overrides = [parse_assignment(line) for line in lines if not line.startswith("#")]
        data = merge_layers(load_preset_layer(preset), fields, *overrides)
        data["dataset"], data["output"] = fields["dataset"], {**data.get("output", {}), "dir": str(self.runs_root)}
        return build_job(data, "the form"), str(form["backend"] or "simpletuner")

    def plan(self, draft: str, form: dict[str, Any]) -> dict[str, Any]:
        from orchestrator.training import preflight

        job, backend = self.job(draft, form)
        ready = preflight(job, backend, need_env=False)
        notes = list(ready.notes)
        try:  # not a refusal: the job may be meant for a cluster, where the backend is set up
            preflight(job, backend, need_env=True)
        except BackendNotReady as exc:
            notes.append(f"on this machine: {exc.message}" + (f" (fix: {exc.hint})" if exc.hint else ""))
        (self.folder(draft) / "settings.json").write_text(json.dumps(form), encoding="utf-8")
        return {
            "backend": backend,
            "plan": ready.plan.text(),
            "steps": ready.plan.total_steps,
            "notes": notes,
            "job": dump_job(ready.job),
            "family": ready.job.family,
        }

    def discard(self, draft: str) -> None:
        shutil.rmtree(self.folder(draft), ignore_errors=True)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name
