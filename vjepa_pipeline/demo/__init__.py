"""`vjepa demo`: raw footage to evaluated encoder on one CPU.

- ``dataset``: the motion-defined demo dataset generator (real mp4 files);
- ``plan``: the demo's plan (working folder, seeds, steps, sizes), its recipe and eval suite (found
  with the packaged recipes) and the pretraining config of one seed;
- ``pipeline``: the stages (generate -> shard -> pretrain -> evaluate -> report), ``run_demo``;
- ``report``: the report folder (tables, curves, feature PCA, contact sheet).

Kept light: importing the package imports none of them (``vjepa data generate-demo`` needs no torch).
"""
