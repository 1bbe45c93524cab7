"""Reproduction of the study's comparison (Table 3, Figures 10-12) over recipes, architectures and seeds.

``recipes`` names the training settings, ``runner`` trains the grid into ``runs/`` and writes one small
JSON per run into ``results/``, ``aggregate`` and ``stats`` turn those files into means and intervals,
``tables`` and ``figures`` into the report (``classes12`` the report of a 12-class recipe); in-domain pretraining of ``best`` is an ordinary classes12 run (``Recipe.pretrain_config``).
"""

from hotspot_jax.reproduce.recipes import RECIPES, Recipe, get_recipe
from hotspot_jax.reproduce.study import STUDY_ARCHS, STUDY_TABLE3

__all__ = ["RECIPES", "Recipe", "STUDY_ARCHS", "STUDY_TABLE3", "get_recipe"]
