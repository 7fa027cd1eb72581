"""Packaging details pyproject.toml cannot express (all metadata lives there).

The pretraining recipes (configs/pretrain/) and eval suites (eval/) stay at the top of the
repository but ship inside the wheel, as data-only packages mapped onto those folders (nothing is
copied or linked in the source tree):

    configs/pretrain/*.yaml    -> vjepa_pipeline/recipes/pretrain/*.yaml
    configs/world_model/*.yaml -> vjepa_pipeline/recipes/world_model/*.yaml
    eval/*.yaml                -> vjepa_pipeline/recipes/eval/*.yaml

vjepa_pipeline.config.recipes finds them with importlib.resources, so `vjepa pretrain --config
debug` and `vjepa demo` work from a non-editable install. In an editable install the package
holds no recipes/ folder and the checkout's own folders are used.
"""

from setuptools import find_namespace_packages, setup

RECIPES = {"vjepa_pipeline.recipes.pretrain": "configs/pretrain", "vjepa_pipeline.recipes.eval": "eval",
           "vjepa_pipeline.recipes.world_model": "configs/world_model"}

setup(
    packages=find_namespace_packages(include=["vjepa_pipeline", "vjepa_pipeline.*"], exclude=["*.__pycache__"])
    + list(RECIPES),
    package_dir=RECIPES,
    package_data={name: ["*.yaml"] for name in RECIPES},
)
