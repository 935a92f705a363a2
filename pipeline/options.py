"""``egoveil run`` options, as a Beam ``PipelineOptions`` subclass.

Everything not listed here is a standard Beam option (``--runner``,
``--direct_num_workers``, ``--project``, ``--setup_file``, ...); an option that
neither egoveil nor Beam knows is an error, not a silent no-op.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from pipeline.anonymization_options import add_anonymization_args
from privacy.consent import DEFAULT_PURPOSE
from privacy.gates import DEFAULT_MAX_FAILURE_RATE
from schemas.latents import EMBEDDING_DTYPE, LATENT_DTYPES
from transforms.media.inputs import DecodeCaps
from transforms.models.encoders import DEFAULT_ENCODER
from transforms.models.runtime import DEVICES, PRECISIONS, RuntimeConfig
from transforms.segments import DEFAULT_SEGMENT_SECONDS
from transforms.stores.shards import DEFAULT_TARGET_SHARD_BYTES

# Defaults come from the configuration dataclasses, never from literals here.
_CAPS = DecodeCaps()
_RUNTIME = RuntimeConfig()


class EgoveilOptions(PipelineOptions):
    """Inputs, outputs, privacy and encoder settings of a run."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        io = parser.add_argument_group("inputs and outputs")
        io.add_argument("--input", dest="input", nargs="+", default=[],
                        help="recordings: files, folders (searched recursively) or globs; "
                             "local or any Beam filesystem (gs://, s3://)")
        io.add_argument("--manifest", dest="manifest", default=None,
                        help="JSON Lines manifest, one recording per line (see README)")
        io.add_argument("--output", dest="output", default=None,
                        help="output folder (local or object store)")
        io.add_argument("--clips", dest="clips", action="store_true", default=False,
                        help="also write each clip's anonymized video under clips/")
        io.add_argument("--wait-for-lock", dest="wait_for_lock", type=float, default=0.0,
                        metavar="SECONDS",
                        help="when another run or erasure holds --output, wait this long for "
                             "it to finish (default 0: refuse at once)")

        priv = parser.add_argument_group("privacy")
        priv.add_argument("--key-file", dest="key_file", default=None,
                          help="secret for keyed pseudonyms (default: $EGOVEIL_PSEUDONYM_KEY); "
                               "workers read it themselves, so it never enters the job graph")
        priv.add_argument("--consent", dest="consent", default=None,
                          help="consent registry CSV: wearer_id,purpose,granted_at,withdrawn_at")
        priv.add_argument("--purpose", dest="purpose", default=DEFAULT_PURPOSE,
                          help="processing purpose checked against the consent registry")
        priv.add_argument("--location-geohash", dest="location_geohash", type=int, default=None,
                          help="keep a manifest location as its geohash cell of this precision "
                               "(1-5; 5 is about 5 km); without it, locations are dropped")
        add_anonymization_args(priv)

        enc = parser.add_argument_group("encoder and clips")
        enc.add_argument("--encoder", dest="encoder", default=DEFAULT_ENCODER,
                         help="Hugging Face model id, a save_pretrained folder, or "
                              "random:vjepa2-tiny / random:vjepa2-small")
        enc.add_argument("--encoder-revision", dest="encoder_revision", default=None)
        enc.add_argument("--frames-per-clip", dest="frames_per_clip", type=int, default=None,
                         help="frames per clip (default: 16 for video encoders, 1 for image)")
        enc.add_argument("--frame-stride", dest="frame_stride", type=int, default=2,
                         help="take every n-th decoded frame into a clip")
        enc.add_argument("--batch-size", dest="batch_size", type=int,
                         default=_RUNTIME.batch_size,
                         help="clips per encoder forward pass")
        enc.add_argument("--resolution", dest="resolution", type=int, default=None,
                         help="encoder input side in pixels (default: the model processor's)")
        enc.add_argument("--tokens", dest="tokens", action="store_true", default=False,
                         help="also store each clip's token grid (what world-model predictors "
                              "train on)")
        enc.add_argument("--token-grid", dest="token_grid", default=None, metavar="TxHxW",
                         help="average-pool the stored token grid to this size, e.g. 4x8x8 "
                              "(implies --tokens)")
        enc.add_argument("--latent-dtype", dest="latent_dtype", default=EMBEDDING_DTYPE,
                         choices=LATENT_DTYPES, help="storage dtype of latents")
        enc.add_argument("--device", dest="device", default=_RUNTIME.device, choices=DEVICES,
                         help="where the encoder runs (auto: the GPU when there is one)")
        enc.add_argument("--precision", dest="precision", default=_RUNTIME.precision,
                         choices=PRECISIONS,
                         help="encoder arithmetic (auto: bf16 on GPUs, fp32 on CPUs)")
        enc.add_argument("--compile", dest="compile", action="store_true", default=False,
                         help="torch.compile the encoder (batches padded to --batch-size)")
        enc.add_argument("--stereo-embed", dest="stereo_embed", default="separate",
                         choices=("separate", "joint"),
                         help="stereo pairs: one row per eye sharing a pair_id (separate), or "
                              "one 'stereo' row embedding both eyes side by side (joint)")
        enc.add_argument("--segment-seconds", dest="segment_seconds", type=float,
                         default=DEFAULT_SEGMENT_SECONDS,
                         help="length of a segment, the unit of parallel work")
        enc.add_argument("--target-shard-mb", dest="target_shard_mb", type=float,
                         default=DEFAULT_TARGET_SHARD_BYTES / 1024**2,
                         help="approximate size of one latent shard")

        lim = parser.add_argument_group("limits (checked before decoding)")
        lim.add_argument("--max-pixels", dest="max_pixels", type=int, default=_CAPS.max_pixels,
                         help="largest frame, width x height (default and most: 4096x4096, "
                              "what the face detector takes)")
        lim.add_argument("--max-duration-s", dest="max_duration_s", type=float,
                         default=_CAPS.max_duration_s, help="longest recording (default 4 h)")
        lim.add_argument("--max-fps", dest="max_fps", type=float, default=_CAPS.max_fps,
                         help=f"highest frame rate (default {_CAPS.max_fps:g}); with "
                              "--max-duration-s it caps a recording's frame count")
        lim.add_argument("--max-input-gb", dest="max_input_gb", type=float,
                         default=_CAPS.max_bytes / 1024**3, help="largest input file")
        lim.add_argument("--max-failure-rate", dest="max_failure_rate", type=float,
                         default=DEFAULT_MAX_FAILURE_RATE,
                         help="the largest fraction of inputs that may fail (dead letters) "
                              "before the job fails and publishes nothing (default "
                              f"{DEFAULT_MAX_FAILURE_RATE:g}; 1 never fails)")
        lim.add_argument("--no-cache", dest="cache", action="store_false", default=True,
                         help="neither reuse nor remember finished segments in "
                              "OUTPUT/.cache (reruns and restarts redo all work)")
        lim.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                         help="no progress bar on the console")


def _all_option_classes(base=PipelineOptions):
    for cls in base.__subclasses__():
        yield cls
        yield from _all_option_classes(cls)


def unknown_arguments(argv: list[str], positionals: bool = False) -> list[str]:
    """Flags that neither egoveil nor any installed Beam options class understands (and,
    with ``positionals``, words that are no option's value)."""
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    seen = set()
    for cls in _all_option_classes():
        if cls in seen:
            continue
        seen.add(cls)
        try:
            cls._add_argparse_args(parser)
        except Exception:  # noqa: BLE001 - an options class that clashes: Beam ignores it too
            continue
    _, unknown = parser.parse_known_args(argv)
    return [arg for arg in unknown if positionals or arg.startswith("-")]
