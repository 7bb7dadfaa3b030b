"""Model directories: ``config.json`` + weights + ``tokenizer.json``; loading, saving, fingerprints.

Format v2 (written by this version)::

    config.json     {"format": "plutok-model", "format_version": 2,
                     "frontend": {...}, "speaker": {...}, "codec": {...}, "vocoder": {...},
                     "bpe": {"codebook_size", "vocab_size"}, "default_speaker": [...], "metadata": {...}}
                    each part section: registered name, settings, "weights_sha256";
                    optionally "postfilter": {...} (between codec decoder and vocoder)
    codec.safetensors (or the codec's own files), tokenizer.json

Format v1 (the 0.1 models: ``backbone`` + ``vqvae`` sections, ``vqvae.safetensors``)
keeps loading, and a v1 model keeps its v1 fingerprint and is saved as v1, so
``.plt`` files made with it stay valid.

The fingerprint is a SHA-256 over the canonical JSON of the parts' configs --
weight digests included, also of packaged weights (vocoder file, Whisper) --
and the BPE vocabulary. The *token space* is the same hash without the vocoder
(nor the post-filter, nor the default voice): what gives token ids their meaning (frontend, speaker
encoder, codec, BPE). Models that differ only in their vocoder (the default and
``fast``) share it, so each decodes the other's files, rows and encodings.
``.plt`` files and token rows store the first 8 bytes of the token space (files
written before it existed: of the fingerprint, see :func:`accepted_fingerprints`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from plutok import registry
from plutok.bpe import load_tokenizer
from plutok.catalog import BUNDLED_MODELS, DERIVED_MODELS, bundled_model_names, retired_model_named
from plutok.digests import update_with_state_dict
from plutok.errors import ModelError
from plutok.files import atomic_write_text, give_default_permissions

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "ModelParts",
    "accepted_fingerprints",
    "check_parts",
    "default_model_path",
    "fingerprint",
    "load_model_parts",
    "save_model_parts",
    "token_space",
]

MODEL_FORMAT = "plutok-model"
MODEL_FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
PART_KINDS = ("frontend", "speaker", "codec", "vocoder")


def default_model_path() -> Path:
    """Directory of the default model bundled with the package."""
    return bundled_model_path("default")


def bundled_model_path(name: str) -> Path:
    """Directory of a bundled model: ``"default"`` (v2.7) or ``"v1"`` (the 0.1 default, kept so that
    its ``.plt`` files keep decoding). The v2.0-v2.4 defaults left the package after 0.6.0
    (:data:`plutok.catalog.RETIRED_MODELS` says where they are)."""
    return Path(str(resources.files("plutok") / "assets" / BUNDLED_MODELS[name]))


@dataclass
class ModelParts:
    """Everything a model directory holds, built."""

    frontend: Any
    speaker: Any
    codec: Any
    vocoder: Any
    bpe: Any
    metadata: dict[str, Any]
    default_speaker: list[float] | None = None
    #: An optional :class:`~plutok.postfilters.Postfilter` between codec decoder and vocoder.
    postfilter: Any = None
    #: v1 models: the ``backbone`` section they were built from (kept for their fingerprint and saving).
    legacy_backbone: Any = None


def _parts_config(parts: ModelParts) -> dict[str, Any]:
    """The v2 ``config.json`` without metadata (what the fingerprint covers)."""
    config: dict[str, Any] = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION}
    for kind in PART_KINDS:
        part = getattr(parts, kind)
        config[kind] = {**part.config(), "weights_sha256": part.weights_digest()}
    if parts.postfilter is not None:
        # Only when present, so that models without one keep their fingerprints.
        config["postfilter"] = {**parts.postfilter.config(), "weights_sha256": parts.postfilter.weights_digest()}
    config["bpe"] = {"codebook_size": parts.bpe.codebook_size, "vocab_size": parts.bpe.vocab_size}
    if parts.default_speaker is not None:
        config["default_speaker"] = [float(v) for v in parts.default_speaker]
    return config


def _legacy_config(parts: ModelParts) -> dict[str, Any]:
    return {
        "format": MODEL_FORMAT,
        "format_version": 1,
        "backbone": parts.legacy_backbone.config(),
        "vqvae": parts.codec.model.config.to_dict(),
        "bpe": {"codebook_size": parts.bpe.codebook_size, "vocab_size": parts.bpe.vocab_size},
    }


def fingerprint(parts: ModelParts) -> str:
    """SHA-256 (hex) identifying the model's computation (see the module docstring)."""
    digest = hashlib.sha256()
    if parts.legacy_backbone is not None:
        # Exactly the 0.1 computation, so v1 .plt files keep decoding with v1 models.
        digest.update(json.dumps(_legacy_config(parts), sort_keys=True).encode())
        update_with_state_dict(digest, parts.codec.model.state_dict())
        digest.update(parts.bpe.tokenizer.to_str().encode())
        digest.update(parts.legacy_backbone.weights_digest().encode())
        return digest.hexdigest()
    digest.update(json.dumps(_parts_config(parts), sort_keys=True).encode())
    digest.update(parts.bpe.tokenizer.to_str().encode())
    return digest.hexdigest()


def token_space(parts: ModelParts) -> str:
    """SHA-256 (hex) of what gives the model's token ids their meaning: all but the vocoder
    (and the post-filter before it).

    A v1 model (one computation, from before vocoders were parts) has its fingerprint as token space.
    """
    if parts.legacy_backbone is not None:
        return fingerprint(parts)
    config = _parts_config(parts)
    del config["vocoder"]
    config.pop("postfilter", None)  # like the vocoder: how ids sound, not what they mean
    config.pop("default_speaker", None)  # a decode-time voice, not part of what ids mean
    digest = hashlib.sha256(b"plutok token space\n")
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(parts.bpe.tokenizer.to_str().encode())
    return digest.hexdigest()


def accepted_fingerprints(parts: ModelParts) -> frozenset[bytes]:
    """The 8-byte prefixes of files, rows and encodings these parts can decode.

    The token space; the model's own fingerprint; and the fingerprints this token
    space has with each bundled vocoder (what files made before token spaces, by the
    default or ``fast``, carry), so every model of one token space reads them all.
    """
    accepted = {bytes.fromhex(token_space(parts)[:16]), bytes.fromhex(fingerprint(parts)[:16])}
    if parts.legacy_backbone is not None:
        return frozenset(accepted)
    config = _parts_config(parts)
    # With the post-filter (a sibling's file, vocoder swapped) and without (files of models
    # before the post-filter existed, e.g. the same codec before v2.7).
    variants = [config]
    if "postfilter" in config:
        variants.append({key: value for key, value in config.items() if key != "postfilter"})
    vocabulary = parts.bpe.tokenizer.to_str().encode()
    for variant in variants:
        for section in _bundled_vocoder_sections():
            digest = hashlib.sha256(json.dumps({**variant, "vocoder": section}, sort_keys=True).encode())
            digest.update(vocabulary)
            accepted.add(digest.digest()[:8])
    return frozenset(accepted)


@functools.cache
def _bundled_vocoder_sections() -> tuple[dict[str, Any], ...]:
    """The ``vocoder`` sections (config + weights digest) of every bundled model and vocoder."""
    folders = [*BUNDLED_MODELS.values(), *(folder for _, _, folder in DERIVED_MODELS.values())]
    sections: dict[str, dict[str, Any]] = {}
    for folder in folders:
        path = Path(str(resources.files("plutok") / "assets" / folder / CONFIG_FILE))
        try:
            section = json.loads(path.read_text(encoding="utf-8")).get("vocoder")
        except (OSError, ValueError):
            continue  # a missing bundled model is reported when it is loaded
        if isinstance(section, dict):
            sections[json.dumps(section, sort_keys=True)] = section
    return tuple(sections.values())


def _read_config(directory: Path, is_default: bool) -> dict[str, Any]:
    if not directory.is_dir():
        if is_default:
            raise ModelError(f"the bundled default model is missing ({directory}); reinstall plutok")
        raise ModelError(f"{directory}: not a model directory")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(f"{directory}: no {CONFIG_FILE}; not a Plutok model directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{config_path}: corrupt JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise ModelError(f"{config_path}: not a Plutok model config")
    if config.get("format_version") not in SUPPORTED_VERSIONS:
        raise ModelError(
            f"{config_path}: model format version {config.get('format_version')} is not supported "
            f"(this Plutok reads {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    return config


def check_parts(parts: ModelParts) -> None:
    """:class:`ModelError` when the parts do not fit together (channels, codebook size)."""
    if parts.codec.input_dim != parts.frontend.feature_dim:
        raise ModelError(
            f"the codec reads {parts.codec.input_dim} feature channels but the {parts.frontend.name} "
            f"frontend gives {parts.frontend.feature_dim}"
        )
    if parts.codec.output_dim != parts.vocoder.feature_dim:
        raise ModelError(
            f"the codec writes {parts.codec.output_dim} channels but the vocoder reads {parts.vocoder.feature_dim}"
        )
    if parts.bpe.codebook_size != parts.codec.codebook_size:
        raise ModelError(
            f"tokenizer was trained for {parts.bpe.codebook_size} codes, the codec has {parts.codec.codebook_size}"
        )


def _derived_model_parts(name: str) -> ModelParts:
    base, kind, folder = DERIVED_MODELS[name]
    parts = load_model_parts(base)
    directory = Path(str(resources.files("plutok") / "assets" / folder))
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(f"the bundled {kind} of model {name!r} is missing ({directory}); reinstall plutok")
    config = json.loads(config_path.read_text(encoding="utf-8"))[kind]
    part = registry.build(kind, config, directory)
    if config.get("weights_sha256") not in (None, part.weights_digest()):
        raise ModelError(
            f"{config_path}: the {kind} weights differ from the recorded digest; reinstall plutok"
        )
    setattr(parts, kind, part)
    parts.metadata = {**parts.metadata, "description": f"bundled {base!r} model with the {part.name} {kind}"}
    return parts


def _model_directory(path: str | os.PathLike) -> Path:
    """The folder a ``path`` that is not a bundled name means; a bare name never means a folder here.

    A bare name (no path separator) is taken for a bundled model: if a folder of the working
    directory could answer to it, a folder called ``v2.4`` or ``fast`` wherever Plutok runs
    would silently replace the bundled model. Such a folder must be written as ``./name``.
    """
    if not isinstance(path, str):
        return Path(path)  # a Path object is a path, never a name
    separators = tuple(sep for sep in ("/", os.sep, os.altsep) if sep)
    if any(sep in path for sep in separators) or path in (".", ".."):
        return Path(path)
    names = ", ".join(bundled_model_names())
    retired = retired_model_named(path)
    if retired is not None and not Path(path).is_dir():
        raise ModelError(f"{retired.describe()}, is no longer shipped; {retired.where_to_decode()}")
    if Path(path).is_dir():
        raise ModelError(
            f"{path!r} is not a bundled model ({names}); to load the folder {path} in the working "
            f"directory, write it as a path: ./{path}"
        )
    raise ModelError(f"{path!r} is neither a bundled model ({names}) nor a model folder")


def load_model_parts(path: str | os.PathLike | None = None) -> ModelParts:
    """Build every part of a model: ``path`` a bundled name (``"v1"``, ``"fast"``), a folder, or None (default).

    Bundled names win; a folder is found only by a path (``./v2.4``, ``models/mine``), never
    by a bare name that happens to be a folder of the working directory.

    Raises:
        ModelError: a broken or missing model directory, a bare name that is no bundled
            model, or the name of a model earlier releases bundled (one line saying which
            release and commit still have it).
    """
    if isinstance(path, str) and path in DERIVED_MODELS:
        return _derived_model_parts(path)
    bundled = path is None or (isinstance(path, str) and path in BUNDLED_MODELS)
    directory = bundled_model_path(path or "default") if bundled else _model_directory(path)  # type: ignore[arg-type]
    config = _read_config(directory, bundled)
    config_path = directory / CONFIG_FILE
    try:
        if config["format_version"] == 1:
            from plutok.legacy.parts import parts_from_v1_config

            return parts_from_v1_config(config, directory)
        built = {kind: registry.build(kind, config[kind], directory) for kind in PART_KINDS}
        bpe = load_tokenizer(directory / TOKENIZER_FILE, codebook_size=built["codec"].codebook_size)
    except KeyError as error:
        raise ModelError(f"{config_path}: missing section {error}") from None
    parts = ModelParts(**built, bpe=bpe, metadata=dict(config.get("metadata") or {}))
    parts.default_speaker = config.get("default_speaker")
    checked = list(PART_KINDS)
    if config.get("postfilter") is not None:
        parts.postfilter = _build_postfilter(parts, config["postfilter"], directory, config_path)
        checked.append("postfilter")
    for kind in checked:
        stored = config[kind].get("weights_sha256")
        actual = getattr(parts, kind).weights_digest()
        if stored is not None and stored != actual:
            raise ModelError(
                f"{config_path}: the {kind} weights differ from the ones this model was made with "
                f"(sha256 {actual[:12]}..., expected {stored[:12]}...); reinstall the package that provides them"
            )
    return parts


def _build_postfilter(parts: ModelParts, section: Any, directory: Path, config_path: Path) -> Any:
    """The ``postfilter`` section as a part; its channels must be the codec decoder's output channels."""
    postfilter = registry.build("postfilter", section, directory)  # refuses a section that is no object
    if postfilter.feature_dim != parts.codec.output_dim:
        raise ModelError(
            f"{config_path}: the postfilter reads {postfilter.feature_dim} channels, "
            f"the codec decoder writes {parts.codec.output_dim}"
        )
    return postfilter


def save_model_parts(parts: ModelParts, directory: str | os.PathLike) -> Path:
    """Write a model directory; assembled beside the target and renamed into place.

    An interrupted save never leaves a half-written model, and a directory that is
    not a Plutok model is never replaced.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    give_default_permissions(staging, directory=True)  # a model dir is meant to be shared
    try:
        parts.bpe.save(staging / TOKENIZER_FILE)
        if parts.legacy_backbone is not None:
            if parts.postfilter is not None:
                raise ModelError("a v1 model cannot carry a post-filter (its format has no place for one)")
            parts.codec.model.save(staging, write_config=False)
            parts.legacy_backbone.save_weights(staging)
            config = _legacy_config(parts)
            if parts.default_speaker is not None:
                config["default_speaker"] = [float(v) for v in parts.default_speaker]
        else:
            for kind in PART_KINDS:
                getattr(parts, kind).save_weights(staging)
            config = _parts_config(parts)
        config["metadata"] = parts.metadata
        atomic_write_text(staging / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
        # Swap directories with renames only: a kill at any point leaves either the old
        # or the new model in place (plus a hidden leftover), never a mix or nothing.
        previous = None
        if directory.exists():
            if any(directory.iterdir()) and not is_model_directory(directory):
                raise ModelError(f"{directory}: exists and is not a Plutok model directory; not overwriting")
            previous = directory.parent / f".{directory.name}.previous-{os.getpid()}"
            os.replace(directory, previous)
        os.replace(staging, directory)
        if previous is not None:
            shutil.rmtree(previous)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return directory


def is_model_directory(directory: Path) -> bool:
    """True when ``directory`` holds a ``config.json`` of a Plutok model (safe to replace)."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == MODEL_FORMAT
