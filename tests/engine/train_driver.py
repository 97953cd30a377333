"""Run training in a real process for the engine tests, the way users run it.

    python train_driver.py train_net <train_net.py arguments>   # runs train_net.py's command line
    python train_driver.py direct <train_net.py arguments>      # same main(), via engine.launch

Before training it registers the synthetic dataset (the config names it) and adds recording
hooks to ``Trainer``: every iteration appends {"rank", "iter", "lr"} to ``$FPN_TEST_RECORD``
(one JSON line per process), and after iteration ``$FPN_TEST_BLOCK_AFTER`` the process prints
"BLOCKED" and sleeps, waiting for the test to SIGKILL it. At the end, each process writes
``final_rank<r>.json`` in OUTPUT_DIR with its start and final iterations.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import register_synthetic  # noqa: E402  (imports fpn_plugin first)

from detectron2.engine import HookBase, default_argument_parser  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from fpn_plugin.engine import Trainer, launch  # noqa: E402
from fpn_plugin.engine.setup import config_device, setup_cfg  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Record(HookBase):
    def before_step(self):
        path = os.environ.get("FPN_TEST_RECORD")
        if path:
            lr = self.trainer.optimizer.param_groups[0]["lr"]
            with open(path, "a") as f:
                f.write(json.dumps({"rank": comm.get_rank(), "iter": self.trainer.iter, "lr": lr}) + "\n")

    def after_step(self):
        block = os.environ.get("FPN_TEST_BLOCK_AFTER")
        if block and self.trainer.iter == int(block):
            print("BLOCKED", flush=True)
            time.sleep(600)

    def after_train(self):
        path = os.path.join(self.trainer.cfg.OUTPUT_DIR, f"final_rank{comm.get_rank()}.json")
        states = self.trainer.optimizer.state_dict()["state"]
        checksum = sum(float(p.detach().double().abs().sum()) for p in self.trainer.model.parameters())
        with open(path, "w") as f:
            json.dump({"start_iter": self.trainer.start_iter, "iter": self.trainer.iter,
                       "world_size": comm.get_world_size(), "optimizer_states": len(states),
                       "weights_checksum": checksum}, f)


_build_hooks = Trainer.build_hooks
Trainer.build_hooks = lambda self: [Record()] + _build_hooks(self)
for name in os.environ.get("FPN_TEST_DATASETS", "").split(","):
    if name:
        register_synthetic(name, os.environ["FPN_TEST_DATA_ROOT"])


def main(args):
    cfg = setup_cfg(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "train_net":
        # Imported, not run as __main__: the processes a launcher spawns import this driver as
        # their main module, so they too get the datasets and the hooks above.
        sys.argv = [os.path.join(ROOT, "train_net.py")] + argv
        sys.path.insert(0, ROOT)
        import train_net

        train_net.cli(argv)
    else:
        args = default_argument_parser().parse_args(argv)
        launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url,
               args=(args,), device=config_device(args))
