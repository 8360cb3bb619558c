"""What image generators write about themselves in plain text, read as short excerpts.

- AUTOMATIC1111, Forge and SD.Next write a ``parameters`` text: the prompt, a ``Negative prompt:``
  line, then one line ``Steps: 20, Sampler: ..., Seed: ..., Model: ...`` (in PNG a text chunk, in
  JPEG and WebP the EXIF ``UserComment``);
- ComfyUI writes its API graph as JSON in ``prompt`` and its editor graph in ``workflow``;
- NovelAI writes ``Software: NovelAI``, the prompt in ``Description`` and its settings as JSON in
  ``Comment``; InvokeAI writes JSON in ``invokeai_metadata``;
- other software names itself in ``Software``.

Each is a :class:`Finding` (claim, sentence, values); only excerpts are kept (a workflow can be
megabytes): :func:`~ai_image_detection.serving.provenance.model.make_evidence` clips every value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ai_image_detection.serving.provenance.model import clip

GENERATOR_SOFTWARE = re.compile(
    r"\b(midjourney|dall[-\u00b7 ]?e|stable[ -]?diffusion|sdxl|firefly|imagen|novelai|comfyui|"
    r"automatic1111|invokeai|fooocus|ideogram|leonardo\.ai)\b",
    re.IGNORECASE,
)
"""Software names that only image generators carry (Adobe Firefly, Google Imagen, OpenAI DALL-E,
Midjourney, Stable Diffusion and its front-ends, NovelAI, Ideogram, Leonardo.Ai); any other
software is taken for an editor."""

SETTINGS_LINE = re.compile(r"^Steps: \d+", re.MULTILINE)
SETTING = re.compile(r'\s*([A-Za-z][\w ./+-]{0,40}?): ("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)')
SETTINGS_CHARS = 4000  # of the settings line parsed: the kept settings come first
A1111_KEPT = (
    "model",
    "model_hash",
    "sampler",
    "schedule_type",
    "steps",
    "cfg_scale",
    "seed",
    "size",
    "version",
)
EXIF_IFD, EXIF_USER_COMMENT = 0x8769, 0x9286
CHARACTER_CODE_BYTES = 8
NAME_CHARS = 80


@dataclass(frozen=True)
class Finding:
    """What one generator's text says: a claim (``ai``, ``edited``, ``unknown``), a sentence and values."""

    claim: str
    detail: str
    fields: Mapping[str, object] = field(default_factory=dict)


def short(value: object) -> str:
    """A name for a sentence: one line of at most ``NAME_CHARS`` characters."""
    return clip(value, NAME_CHARS)


def _json(text: str, max_bytes: int) -> Any:
    """The JSON value of ``text``, or None when it is too large or not JSON."""
    if len(text) > max_bytes:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def parameters_finding(text: str) -> Finding | None:
    """An AUTOMATIC1111-style ``parameters`` text, or None when it has no ``Steps:`` settings line."""
    matches = list(SETTINGS_LINE.finditer(text))  # the last one: a prompt may contain "Steps: " too
    if not matches:
        return None
    match = matches[-1]
    prompt, _, negative = text[: match.start()].partition("Negative prompt:")
    settings_line = text[match.start() :].split("\n", 1)[0][:SETTINGS_CHARS]
    settings = {
        key.strip().lower().replace(" ", "_"): value.strip('" ')
        for key, value in SETTING.findall(settings_line)
    }
    fields: dict[str, object] = {"prompt": prompt.strip(), "negative_prompt": negative.strip()}
    fields.update({key: settings.get(key, "") for key in A1111_KEPT})
    model = f" with the model {short(settings['model'])}" if settings.get("model") else ""
    return Finding("ai", f"Stable Diffusion generation parameters (unsigned){model}.", fields)


def comfyui_finding(prompt: str, workflow: str, max_bytes: int) -> Finding:
    """ComfyUI's ``prompt`` (API graph) and ``workflow`` (editor graph): node types, checkpoint, text."""
    graph, editor = _json(prompt, max_bytes), _json(workflow, max_bytes)
    nodes = [node for node in (graph.values() if isinstance(graph, dict) else []) if isinstance(node, dict)]
    types = [str(node.get("class_type")) for node in nodes if node.get("class_type")]
    inputs: list[dict[str, Any]] = [node["inputs"] for node in nodes if isinstance(node.get("inputs"), dict)]
    checkpoint = next(
        (
            str(i[key])
            for i in inputs
            for key in ("ckpt_name", "unet_name", "model_name")
            if isinstance(i.get(key), str)
        ),
        "",
    )
    text = next((i["text"] for i in inputs if isinstance(i.get("text"), str)), "")
    editor_nodes = editor.get("nodes") if isinstance(editor, dict) else None
    if not types and not isinstance(editor_nodes, list):
        excerpt = {"prompt": prompt, "workflow": workflow}
        return Finding(
            "unknown", "A `prompt`/`workflow` text that is not a ComfyUI graph (unsigned).", excerpt
        )
    fields: dict[str, object] = {
        "generator": "ComfyUI",
        "checkpoint": checkpoint,
        "prompt": text,
        "nodes": str(len(nodes)) if nodes else "",
        "node_types": ", ".join(dict.fromkeys(types)),
        "workflow_nodes": str(len(editor_nodes)) if isinstance(editor_nodes, list) else "",
    }
    model = f" with the checkpoint {short(checkpoint)}" if checkpoint else ""
    return Finding("ai", f"A ComfyUI generation graph (unsigned){model}.", fields)


def novelai_finding(texts: Mapping[str, str], max_bytes: int) -> Finding:
    """NovelAI's ``Software``, ``Source``, ``Description`` (the prompt) and ``Comment`` (JSON settings)."""
    comment = _json(texts.get("Comment", ""), max_bytes)
    settings = comment if isinstance(comment, dict) else {}
    fields: dict[str, object] = {
        "software": texts.get("Software", ""),
        "source": texts.get("Source", ""),
        "prompt": texts.get("Description") or settings.get("prompt", ""),
    }
    fields.update({key: settings.get(key, "") for key in ("steps", "sampler", "seed", "scale")})
    return Finding(
        "ai", f"NovelAI generation metadata (unsigned) from {short(texts.get('Software', ''))}.", fields
    )


def invokeai_finding(text: str, max_bytes: int) -> Finding:
    """InvokeAI's ``invokeai_metadata`` JSON: model, prompt, mode."""
    metadata = _json(text, max_bytes)
    values = metadata if isinstance(metadata, dict) else {}
    model = values.get("model")
    name = model.get("name") or model.get("model_name", "") if isinstance(model, dict) else model or ""
    fields: dict[str, object] = {
        "generator": "InvokeAI",
        "model": name,
        "prompt": values.get("positive_prompt", ""),
        "generation_mode": values.get("generation_mode", ""),
        "steps": values.get("steps", ""),
        "excerpt": "" if values else text,
    }
    return Finding(
        "ai",
        f"InvokeAI generation metadata (unsigned){f' with the model {short(name)}' if name else ''}.",
        fields,
    )


def software_finding(software: str) -> Finding:
    """A ``Software`` text: a generator's name claims AI, any other names an editor."""
    if GENERATOR_SOFTWARE.search(software):
        return Finding(
            "ai", f"The metadata (unsigned) names the generator {short(software)}.", {"software": software}
        )
    return Finding(
        "edited", f"The metadata (unsigned) names the software {short(software)}.", {"software": software}
    )


def generator_findings(texts: Mapping[str, str], max_bytes: int) -> list[Finding]:
    """What the text chunks of a PNG (keyword -> text) say, one finding per generator recognised.

    Args:
        texts: The image's text chunks.
        max_bytes: Largest text parsed as JSON; a larger one is kept only as an excerpt.

    Returns:
        The findings, in the order A1111, ComfyUI, InvokeAI, NovelAI or other software.
    """
    findings = []
    if "parameters" in texts:
        findings.append(
            parameters_finding(texts["parameters"])
            or Finding(
                "unknown",
                "A `parameters` text without generation settings (unsigned).",
                {"parameters": texts["parameters"]},
            )
        )
    if "prompt" in texts or "workflow" in texts:
        findings.append(comfyui_finding(texts.get("prompt", ""), texts.get("workflow", ""), max_bytes))
    if "invokeai_metadata" in texts:
        findings.append(invokeai_finding(texts["invokeai_metadata"], max_bytes))
    software = texts.get("Software", "").strip()
    if software and "novelai" in software.lower():
        findings.append(novelai_finding(texts, max_bytes))
    elif software:
        findings.append(software_finding(software))
    return findings


def exif_user_comment(exif: Image.Exif) -> str:
    """The EXIF ``UserComment``, decoded from its 8-byte character-code prefix (UNICODE, ASCII)."""
    raw = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes) or len(raw) <= CHARACTER_CODE_BYTES:
        return ""
    code, body = raw[:CHARACTER_CODE_BYTES], raw[CHARACTER_CODE_BYTES:]
    if code.startswith(b"UNICODE"):  # UCS-2 in the file's byte order; A1111 (piexif) writes big-endian
        little = body[:2] != b"\x00\x00" and body[1:2] == b"\x00"
        return body.decode("utf-16-le" if little else "utf-16-be", errors="replace").strip("\x00")
    return body.decode("utf-8", errors="replace").strip("\x00 ")
