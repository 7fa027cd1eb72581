"""``vjepa export``: training checkpoint -> standalone weights (native, official or Hugging Face)."""

from __future__ import annotations

HELP = """\
Export weights from a `vjepa pretrain` checkpoint to a standalone file, fp32 on CPU.

<run_or_ckpt> is a run directory (its `last` checkpoint is used), a checkpoints/step_* directory,
a model.ckpt file, or a DeepSpeed model.ckpt directory (the trainable weights then come from the
fp32 ZeRO master copy, the target encoder from its own fp32 copy).

--what (default target_encoder: the EMA encoder used for frozen evaluation)
  target_encoder | encoder (the context encoder) | predictor | all

--format
  native    our file: the chosen part(s), the training config and step. Read it back with
            vjepa_pipeline.checkpoint.interop.load_part(path, module, part).
  official  the official V-JEPA layout (module.backbone.-prefixed 'encoder', 'predictor',
            'target_encoder'). With --what target_encoder or encoder the chosen encoder is
            written under BOTH 'encoder' and 'target_encoder' (official eval scripts read
            'target_encoder'); --what all writes the three real parts (use it to resume
            official training). No --what predictor. The file also holds what the official
            train (resume, cooldown) and eval scripts read: 'epoch' (step // --ipe), 'opt' (our
            AdamW state in the official optimizer's groups), 'scaler', 'loss', 'batch_size',
            'world_size', 'lr'; the summary says what the optimizer state carries.
  hf        a directory for transformers' VJEPA2Model.from_pretrained (config.json +
            model.safetensors): the chosen encoder plus the predictor. RoPE models only;
            --what target_encoder or encoder.

--out is a file for native / official and a directory for hf; an existing export is replaced.

Action-conditioned runs (objective.kind action_conditioned, V-JEPA 2-AC) export their frozen encoder
and predictor together (no --what):
  native    our file: config, step, 'encoder' (frozen) and 'predictor'. Read it back with
            vjepa_pipeline.checkpoint.ac_checkpoint.load_world_model (or load_ac_predictor_weights).
  official  the app/vjepa_droid training checkpoint: 'encoder' and 'target_encoder' (the frozen
            encoder), 'predictor' (official layout), 'opt', 'scaler', 'epoch', 'loss', 'batch_size',
            'world_size', 'lr'.
  hf        refused: Hugging Face has no V-JEPA 2-AC predictor class.

--ipe N (official only): iterations per epoch for the official 'epoch' = step // N (default:
  data.batches_per_epoch / train.accumulate_grad_batches if the recipe sets it, else 300, the
  published recipes' optimization.ipe). Use the same value as optimization.ipe in the official config.

examples:
  vjepa export runs/debug --out debug_target.pt
  vjepa export runs/vitl16 --format official --what all --out vitl16_official.pt
  vjepa export runs/vitl16/checkpoints/step_0000090000 --format hf --out hf/vitl16

Exit codes: 0 success, 2 usage error, 1 unreadable or mismatched checkpoint.
"""


# Same as vjepa_pipeline.checkpoint.export.WHATS / FORMATS (repeated so `vjepa --help` does not import torch).
WHATS = ("target_encoder", "encoder", "predictor", "all")
FORMATS = ("native", "official", "hf")


def register(sub) -> None:
    import argparse

    p = sub.add_parser("export", help="training checkpoint -> native / official / Hugging Face weights",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="run_or_ckpt",
                   help="run directory, checkpoints/step_* directory, model.ckpt file or DeepSpeed directory")
    p.add_argument("--what", choices=WHATS, default=None,  # None: target_encoder (V-JEPA runs)
                   help="which weights to export (default: target_encoder)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="native",
                   help="output format (default: native)")
    p.add_argument("--out", required=True, help="output file (native, official) or directory (hf)")
    p.add_argument("--ipe", type=int, default=None,
                   help="official format: iterations per epoch for the official 'epoch' (default 300 unless the "
                        "recipe sets data.batches_per_epoch)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..checkpoint.ac_checkpoint import AC_KIND, checkpoint_objective

    if checkpoint_objective(args.checkpoint) == AC_KIND:
        return run_action_conditioned(args)
    from .common import check_output

    check_output(args.out, "--out", folder=args.fmt == "hf")  # hf writes a folder, the others a file

    from ..checkpoint.export import check_request, export
    from ..errors import UsageError

    args.what = args.what or "target_encoder"
    try:
        check_request(args.what, args.fmt)
        if args.ipe is not None and (args.fmt != "official" or args.ipe < 1):
            raise ValueError(f"--ipe takes a positive number and applies to --format official only; got {args.ipe} "
                             f"with --format {args.fmt}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = export(args.checkpoint, args.out, what=args.what, fmt=args.fmt, ipe=args.ipe)
    print(result.summary())
    return 0


def run_action_conditioned(args) -> int:
    """An action-conditioned (V-JEPA 2-AC) run: its frozen encoder and predictor, native or official."""
    from ..checkpoint.ac_checkpoint import HF_REFUSAL, export_ac_run
    from ..errors import UsageError
    from .common import check_output

    if args.fmt == "hf":
        raise UsageError(HF_REFUSAL)
    if args.what not in (None, "all"):
        raise UsageError(f"--what {args.what}: an action-conditioned run exports its frozen encoder and "
                         "predictor together; drop --what")
    out = check_output(args.out, "--out", folder=False)
    try:
        result = export_ac_run(args.checkpoint, out, fmt=args.fmt, ipe=args.ipe)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(result.summary())
    return 0
