"""`make wheelhouse`: every wheel this package needs on an offline Linux x86-64 host that already has JAX.

    python scripts/wheelhouse.py [--python 3.12] [--host-packages bench/gpu-host-packages.txt] [--out wheelhouse]

Run on a connected machine. It builds this package's wheel, asks pip to resolve the whole dependency
closure for the target (Python version, manylinux x86-64, binary wheels only) without installing it
(`pip install --dry-run --report`), leaves out TensorFlow, JAX and every package the host already has
(a `pip list --format=freeze` of it, or a list of names), and downloads the rest. On the host:

    pip install --no-index --find-links wheelhouse cnn-pipeline
    KERAS_BACKEND=jax cnn train trainer=gpu
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]  # fmt: skip
NEVER = re.compile(r"^(tensorflow|tensorflow-.*|tf-keras|tensorboard.*|jax|jaxlib|jax-.*|keras-nightly)$")
LIMIT_MIB = 60
# dependencies published as source only: built into pure-Python wheels here (hydra-core pins antlr 4.9.*)
SOURCE_ONLY = ["antlr4-python3-runtime==4.9.3"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def host_names(path: Path) -> set[str]:
    """Package names from a freeze file (name==version) or a plain list (one per line); # comments ignored."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalize(re.split(r"[=<>~! @\[]", line, maxsplit=1)[0]))
    return names


def target_options(python: str) -> list[str]:
    options = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for platform in PLATFORMS:
        options += ["--platform", platform]
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default="3.12", help="the host's Python version (default 3.12)")
    parser.add_argument("--host-packages", type=Path, default=ROOT / "bench" / "gpu-host-packages.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    for old in args.out.glob("cnn_pipeline-*.whl"):
        old.unlink()
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(args.out), str(ROOT)], check=True)
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(args.out), *SOURCE_ONLY], check=True)
    [own] = args.out.glob("cnn_pipeline-*.whl")
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        resolve = [*pip, "install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report),
                   "--target", str(Path(scratch) / "target"), "--find-links", str(args.out),
                   *target_options(args.python), str(own)]  # fmt: skip
        subprocess.run(resolve, check=True)
        resolved = json.loads(report.read_text())["install"]
    have = host_names(args.host_packages) if args.host_packages else set()
    wanted, left_out = [], []
    for item in resolved:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if normalize(name) == "cnn-pipeline" or any(
            normalize(name) == normalize(b.split("==")[0]) for b in SOURCE_ONLY
        ):
            continue  # built above
        (left_out if NEVER.match(normalize(name)) or normalize(name) in have else wanted).append(f"{name}=={version}")
    # what the host must already have, as resolved: the wheelhouse check installs these from PyPI to play the host
    expected = sorted(spec for spec in left_out if not NEVER.match(normalize(spec.split("==")[0])))
    (args.out / "host-requirements.txt").write_text("".join(f"{spec}\n" for spec in expected))
    if wanted:
        download = [*pip, "download", "--quiet", "--no-deps", "-d", str(args.out), *target_options(args.python)]
        subprocess.run([*download, *wanted], check=True)
    keep = {normalize(spec.split("==")[0]) for spec in wanted} | {"cnn-pipeline"}
    keep |= {normalize(spec.split("==")[0]) for spec in SOURCE_ONLY}
    for wheel in args.out.glob("*.whl"):  # wheels of an earlier run that this one does not need
        if normalize(wheel.name.split("-")[0]) not in keep and not (args.out / wheel.name).samefile(own):
            wheel.unlink()
    total = sum(w.stat().st_size for w in args.out.glob("*.whl")) / 2**20
    count = len(wanted) + 1 + len(SOURCE_ONLY)
    print(f"{args.out}: {count} wheels, {total:.1f} MiB (target <= {LIMIT_MIB} MiB) for CPython "
          f"{args.python} on Linux x86-64; left out as the host's or never carried: {len(left_out)} "
          f"({', '.join(sorted(spec.split('==')[0] for spec in left_out))})")  # fmt: skip
    if total > LIMIT_MIB:
        print(f"warning: over {LIMIT_MIB} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
