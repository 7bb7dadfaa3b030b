"""The models bundled with the package, and the ones earlier releases bundled (no heavy imports: ``--help`` lists them)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BUNDLED_MODELS",
    "DERIVED_MODELS",
    "RETIRED_MODELS",
    "RetiredModel",
    "bundled_model_names",
    "retired_model",
    "retired_model_named",
]

#: Models bundled with the package, by the name ``from_pretrained`` / ``--model`` accept.
BUNDLED_MODELS = {
    "default": "default",
    "v1": "v1",
}
#: Bundled models that are another bundled model with one part replaced, so its weights
#: are not shipped twice: name -> (base model, part kind, folder under assets/ holding
#: that part's config.json and weights). ``fast``: the default with the iSTFT vocoder.
DERIVED_MODELS = {
    "fast": ("default", "vocoder", "vocoders/istft-16k"),
}


@dataclass(frozen=True)
class RetiredModel:
    """A model an earlier release bundled and this one does not; its files stay in git history.

    Attributes:
        name: what it was called (the ``--model`` name while it was bundled).
        fingerprint: its full fingerprint, hex (a ``.plt`` file stores the first 16 digits).
        shipped: which releases bundled it, in words.
        release: the last release that decodes its files.
        commit: a git commit of this repository whose tree holds its files and decodes them.
        model: the ``--model`` name that loads it at ``commit``.
        folder: where its files are in that commit's tree.
    """

    name: str
    fingerprint: str
    shipped: str
    release: str
    commit: str
    model: str
    folder: str

    def where_to_decode(self) -> str:
        """Which release and commit still decode it (one clause)."""
        return (
            f"decode its files with Plutok {self.release} (git commit {self.commit[:10]}, --model {self.model}; "
            f"files in {self.folder})"
        )

    def describe(self) -> str:
        """``model 'v2.4' (fingerprint ...), <what shipped it>``."""
        return f"model {self.name!r} (fingerprint {self.fingerprint[:16]}), {self.shipped}"


def _folders(base: str, name: str) -> str:
    vocoder = " and src/plutok/assets/vocoders/istft-16k" if name.endswith("-fast") else ""
    return f"src/plutok/assets/{base}{vocoder}"


# The 0.6.0 release commit: the last one that bundles v2.0-v2.4 (all decode there).
_RELEASE_0_6 = "ce0d166db39f00bceb43b105b68dc39823002a10"
# Fingerprints as computed by every commit from the one that bundled each model up to
# 0.6.0 (unchanged across them); "fast" variants are the model with the istft-16k vocoder.
RETIRED_MODELS: tuple[RetiredModel, ...] = (
    *(
        RetiredModel(name, fingerprint, shipped, "0.6.0", _RELEASE_0_6, name, _folders(base, name))
        for name, base, fingerprint, shipped in (
            (
                "v2.4",
                "v2.4",
                "8475003c28e29fbb92b9a71fdb7dc31f42aa0fa3d83d0bf2cd8b9e1af97e2062",
                "the 0.5 default, bundled up to 0.6.0",
            ),
            (
                "v2.4-fast",
                "v2.4",
                "0a6719323a6c48e2c1e511912ae6a5d9cbbc656eef356df5bd5c8d5249fb31c4",
                "the 0.5 'fast' model, bundled up to 0.6.0",
            ),
            (
                "v2.3",
                "v2.3",
                "d02e9c17779ee3ada8109fd6ab7fc3e8a176b41d5681e12eb65282f0ee793ec9",
                "the 0.4 default, bundled up to 0.6.0",
            ),
            (
                "v2.3-fast",
                "v2.3",
                "cccc8fcae9bf2dd9c153433b1c43c77d7e2546ecd104093ddfc63b61f11cfc89",
                "the 0.4 'fast' model, bundled up to 0.6.0",
            ),
            (
                "v2.2",
                "v2.2",
                "a2c7d9423dbabfef1dab22509e6a2ceb0c6b2db0449e18f1daa2797064164bc2",
                "the 0.3 default, bundled up to 0.6.0",
            ),
            (
                "v2.2-fast",
                "v2.2",
                "343932846f850739e570e5902e9c8c0e5c75772aa6a3b00bcfdd6c934e96f4ec",
                "the 0.3 'fast' model, bundled up to 0.6.0",
            ),
            (
                "v2.1",
                "v2.1",
                "3dc5102a9791fec9d89b1698db6a7f7f07a6002b828a1678c1dd1e008ac654d3",
                "the later 0.2 default, bundled up to 0.6.0",
            ),
            (
                "v2.1-fast",
                "v2.1",
                "4673f75a09a9dd8135004ce46aab2e9b9d865ac04352d8ce836cd68b47ef2956",
                "the 0.2 'fast' model, bundled up to 0.6.0",
            ),
            (
                "v2.0",
                "v2.0",
                "51a1ec27bcdcc6bda69b3fb802c4f811ae5f566d47bb891356bf097c802993c0",
                "the first 0.2 default, bundled up to 0.6.0",
            ),
        )
    ),
    # The 0.6 default, replaced by v2.6 (the same network on float32 Whisper features).
    RetiredModel(
        "v2.5",
        "5a7e8ce74560b166aac17762ca5eb739bc28c4d66cfd97083fd7bf76bae9890b",
        "the 0.6 default, bundled in 0.6.0",
        "0.6.0",
        _RELEASE_0_6,
        "default",
        "src/plutok/assets/default",
    ),
    RetiredModel(
        "v2.5-fast",
        "045cc4db526a5c897e9034bbc574b22f8079dfba4e4b5cf4a0d25755833afa27",
        "the 0.6 'fast' model, bundled in 0.6.0",
        "0.6.0",
        _RELEASE_0_6,
        "fast",
        "src/plutok/assets/default and src/plutok/assets/vocoders/istft-16k",
    ),
    # The first 0.5.0 default (the real-speech-3x run), replaced within 0.5.0 by the 5x run
    # that became v2.4 (commit 67e7514) and never bundled under a version name.
    RetiredModel(
        "v2.4 (first 0.5.0 build)",
        "dd68c8d49f1de72c84c5dfc6047988205a17df779e5e683dd7054e1b63640746",
        "the default of the first 0.5.0 build, replaced within 0.5.0",
        "0.5.0",
        "fe5571093f9fcac6bc5712ce5c33f91ae3a49ac6",
        "default",
        "src/plutok/assets/default",
    ),
    RetiredModel(
        "fast (first 0.5.0 build)",
        "560fc7292897672948cdb283d630e8f948b7d6671d965fa77fac7633af389082",
        "the 'fast' model of the first 0.5.0 build, replaced within 0.5.0",
        "0.5.0",
        "fe5571093f9fcac6bc5712ce5c33f91ae3a49ac6",
        "fast",
        "src/plutok/assets/default and src/plutok/assets/vocoders/istft-16k",
    ),
)


def bundled_model_names() -> list[str]:
    """Every name :func:`plutok.model_directory.load_model_parts` accepts besides a folder."""
    return [*BUNDLED_MODELS, *DERIVED_MODELS]


def retired_model(fingerprint: str | bytes) -> RetiredModel | None:
    """The retired model with this fingerprint: hex (16 digits or more) or the 8 bytes a ``.plt`` stores."""
    text = fingerprint.hex() if isinstance(fingerprint, bytes) else str(fingerprint).lower()
    if len(text) < 16:
        return None
    return next((model for model in RETIRED_MODELS if model.fingerprint[:16] == text[:16]), None)


def retired_model_named(name: str) -> RetiredModel | None:
    """The retired model that ``--model name`` loaded while it was bundled (``"v2.4"``, ``"v2.4-fast"``)."""
    return next(
        (model for model in RETIRED_MODELS if model.name == name and model.commit == _RELEASE_0_6), None
    )
