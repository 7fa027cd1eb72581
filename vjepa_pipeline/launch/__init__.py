"""``vjepa launch``: any stage on SLURM.

resources.py (flags -> launch.*, allocation checks), profiles.py (cluster profiles in
slurm/profiles/), sbatch.py (submitit parameters and the script text), submit.py (plan, dry run,
submission), entry.py (what runs in the job), rundir.py (launch records in the run directory).
Preemption itself lives with the trainer: vjepa_pipeline/train/preemption.py.
"""
