#!/usr/bin/env python
"""Train or evaluate a detector with fpn_plugin: detectron2's ``tools/train_net.py`` conventions.

    python train_net.py --config-file configs/fpn_r50.yaml                 # train
    python train_net.py --config-file configs/fpn_r50.yaml --resume        # continue OUTPUT_DIR
    python train_net.py --config-file configs/fpn_r50.yaml MODEL.WEIGHTS w.pth  # fine-tune
    python train_net.py --config-file configs/fpn_r50.yaml --eval-only MODEL.WEIGHTS w.pth
    python train_net.py --num-gpus 8 --config-file ...                     # 8 GPUs (or CPU processes)
"""
import fpn_plugin  # noqa: F401  (first: detectron2 compatibility fixes)
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from fpn_plugin.engine import Trainer, launch
from fpn_plugin.engine.setup import config_device, setup_cfg


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


if __name__ == "__main__":
    parser = default_argument_parser()
    parser.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="load a trusted weights file even if it asks to run code (refused by "
                             "default): the same as MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE True")
    args = parser.parse_args()
    if args.allow_unsafe_pickle:
        args.opts = list(args.opts) + ["MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE", "True"]
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        device=config_device(args),
    )
