#!/usr/bin/env python
"""Train or evaluate a detector with fpn_plugin: detectron2's ``tools/train_net.py`` conventions.

    python train_net.py --config-file configs/fpn_r50.yaml                 # train
    python train_net.py --config-file configs/fpn_r50.yaml --resume        # continue OUTPUT_DIR
    python train_net.py --config-file configs/fpn_r50.yaml MODEL.WEIGHTS w.pth  # fine-tune
    python train_net.py --config-file configs/fpn_r50.yaml --eval-only MODEL.WEIGHTS w.pth
    python train_net.py --num-gpus 8 --config-file ...                     # 8 GPUs (or CPU processes)
    torchrun --nproc-per-node 8 train_net.py --config-file ...             # the same, started by torchrun
    srun --ntasks-per-node 8 python train_net.py --config-file ...         # or by SLURM, one task per GPU
"""
import os
import sys

import fpn_plugin  # noqa: F401  (first: detectron2 compatibility fixes)
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from fpn_plugin.engine import Trainer, launch
from fpn_plugin.engine.launch import DEFAULT_TIMEOUT
from fpn_plugin.engine.setup import config_device, setup_cfg

EPILOG = f"""
Examples:

One machine, 8 GPUs (or with MODEL.DEVICE cpu: 8 gloo processes):
    $ {sys.argv[0]} --num-gpus 8 --config-file cfg.yaml

Change some config options:
    $ {sys.argv[0]} --config-file cfg.yaml MODEL.WEIGHTS /path/to/weight.pth SOLVER.BASE_LR 0.001

Several machines, three ways (the first two on every machine, srun once; HOST0 = machine 0's host):
    detectron2's launcher:
      $ {sys.argv[0]} --num-gpus 8 --num-machines 2 --machine-rank R --dist-url tcp://HOST0:PORT ...
    torchrun (--num-gpus stays 1: torchrun starts the processes):
      $ torchrun --nproc-per-node 8 --nnodes 2 --node-rank R --rdzv-backend c10d \\
            --rdzv-endpoint HOST0:PORT {sys.argv[0]} ...
    SLURM (one task per GPU; MASTER_ADDR defaults to the first node, MASTER_PORT to one from the job id):
      $ srun --nodes 2 --ntasks-per-node 8 --gres gpu:8 python {sys.argv[0]} ...
torchrun and srun are recognised from their environment variables (RANK/WORLD_SIZE/LOCAL_RANK,
SLURM_PROCID/SLURM_STEP_NUM_TASKS); the process group is NCCL on GPUs and gloo on CPU.
"""


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = Trainer.build_checkpointer(cfg, model)
        checkpointer.for_inference = True  # refuse a file that would leave any weight random
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    parser = default_argument_parser(epilog=EPILOG)
    parser.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="load a trusted weights file even if it asks to run code (refused by "
                             "default): the same as MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE True")
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT.total_seconds(), metavar="SECONDS",
                        help="how long a process waits in a collective operation (gradient all-reduce, "
                             "barrier) for the others before it stops with an error saying a process "
                             "died or a machine is unreachable (default %(default)g: 30 minutes)")
    return parser


def cli(argv=None):
    """``train_net.py``'s command line (``argv``: the arguments, default ``sys.argv[1:]``)."""
    args = argument_parser().parse_args(argv)
    if args.allow_unsafe_pickle:
        args.opts = list(args.opts) + ["MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE", "True"]
    if os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")) == "0":
        print("Command Line Args:", args)  # once per machine, as with detectron2's launcher
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        device=config_device(args),
        timeout=args.dist_timeout,
    )


if __name__ == "__main__":
    cli()
