"""Post-filters: a fixed transform of the codec decoder's output before the vocoder hears it.

A model may have one (``config.json`` section ``postfilter``). It acts on what the codec
decoder writes — for the v2 models the speaker-normalised log-mel — before the speaker
encoder de-normalises it, and it is pointwise in time, so chunked and streaming decoding
still equal one pass. Like the vocoder it is outside the token space: adding or changing
one changes how tokens sound, not what they mean.
"""

from plutok.postfilters.base import Postfilter

__all__ = ["Postfilter"]
