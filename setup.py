"""StagDrive (stag_sim): closed-loop driving simulation on logged camera data (Stag-1 as a simulator)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version = {}
exec((HERE / "stag_sim" / "version.py").read_text(), version)

# The code is one package, stag_sim/ (with stag_sim/envs and stag_sim/agents), in the standard layout that type
# checkers and IDEs resolve. scenarios/ (YAML data, no code) stays a top-level folder of the repository so the
# README's `--scenarios scenarios/` works from a checkout; it installs as the package data stag_sim.scenarios.
PACKAGES = ["stag_sim"] + [f"stag_sim.{p}" for p in find_packages("stag_sim")] + ["stag_sim.scenarios"]
PACKAGE_DIR = {"stag_sim.scenarios": "scenarios"}

EXTRAS = {
    # nuscenes-devkit 1.2.0 pins numpy<2 and Shapely~=2.0.3: an extra, so the core keeps numpy 2.
    "nuscenes": ["nuscenes-devkit==1.2.0"],
    "diffusion": ["diffusers>=0.30", "transformers>=4.40", "accelerate>=0.30"],
    "carla": ["carla>=0.9.15,<0.10"],
    "ray": ["ray[default]>=2.9"],
    # AlpaSim's egodriver gRPC contract, both ends: stag-sim eval --driver, stag-sim serve (grpcio, protobuf)
    "driver": ["carla-driver-interface>=2.3,<3"],
    # RL recipes (examples/, stag_sim.app.rl); their learning-curve plots use the base install's matplotlib
    "rl": ["stable-baselines3>=2.3"],
    "dev": ["pytest>=7.4", "pytest-timeout>=2.2", "stable-baselines3>=2.3", "ruff>=0.17,<0.18"],
}

setup(
    name="stag-sim",
    version=version["__version__"],
    description="StagDrive: a closed-loop driving simulator that renders logged surround-view drives (Stag-1)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"stag_sim.scenarios": ["*.yaml"]},
    install_requires=[
        "numpy>=1.24",
        "shapely>=2.0",
        "pyyaml>=6.0",
        "opencv-python-headless>=4.8",
        "gymnasium>=1.0",
        # A range, not a pin: CI installs the CPU build torch==2.13.0 first, which satisfies it.
        "torch>=2.1",
        "click>=8.1",
        "tqdm>=4.64",
        "scipy>=1.10",  # rotations, KD-trees (pose refinement), filters
        "numba>=0.60",  # the renderer's compiled CPU kernels (stag_sim/render/kernels.py)
        "imageio-ffmpeg>=0.5",  # H.264 videos browsers play (bundles an ffmpeg binary with libx264)
        "matplotlib>=3.7",  # report.html's plots (bird's-eye view, time series, metric bars), RL learning curves
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["stag-sim = stag_sim.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
