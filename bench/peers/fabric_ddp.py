"""The peers' workload under Lightning Fabric: the baseline's own loop, with Fabric's setup calls.

``Fabric(accelerator="cpu", strategy="ddp", devices=N).launch()``: started with plain ``python``,
Fabric's launcher runs this script again for ranks 1..N-1. ``setup`` wraps the model in DDP,
``setup_dataloaders`` gives the loaders ``DistributedSampler``s seeded from ``seed_everything``
(and sets the epoch at every pass), ``fabric.backward`` replaces ``loss.backward``. Evaluation is
the baseline's, after every epoch, on the Fabric-sharded validation loader.

    python bench/peers/fabric_ddp.py --procs 2 --data X.npz --epochs 3 --summary out/summary.json
"""

from __future__ import annotations

import torch.nn.functional as F
from lightning.fabric import Fabric
from torch.utils.data import DataLoader
from workload import (
    StepClock,
    arguments,
    cosine,
    datasets,
    evaluate,
    model_for,
    set_threads,
    sgd,
    write_summary,
)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, required=True, help="CPU processes (ranks)")
    args = parser.parse_args()
    set_threads(args.procs)
    fabric = Fabric(accelerator="cpu", strategy="ddp", devices=args.procs)
    fabric.launch()
    fabric.seed_everything(args.seed, verbose=False)
    train_set, val_set = datasets(args.data)
    net = model_for(train_set)
    model, optimizer = fabric.setup(net, sgd(net.parameters()))
    train_loader, val_loader = fabric.setup_dataloaders(
        DataLoader(train_set, batch_size=args.batch_size, shuffle=True),
        DataLoader(val_set, batch_size=args.batch_size))
    scheduler = cosine(optimizer, args.epochs * len(train_loader))

    clock = StepClock()
    val_loss, val_acc = float("nan"), float("nan")
    for _ in range(args.epochs):
        clock.start_epoch()
        for inputs, targets in train_loader:
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            scheduler.step()
            clock.step_done(targets.numel())
        clock.end_epoch()
        val_loss, val_acc = evaluate(model, val_loader)
    write_summary(clock, net, args.epochs, val_loss, val_acc, args.summary)


if __name__ == "__main__":
    main()
