"""The peers' workload under Lightning Fabric: the baseline's own loop, with Fabric's setup calls.

``Fabric(accelerator="cpu", strategy="ddp", devices=N).launch()``: started with plain ``python``,
Fabric's launcher runs this script again for ranks 1..N-1. ``setup`` wraps the model in DDP,
``setup_dataloaders`` gives the loaders ``DistributedSampler``s seeded from ``seed_everything``
(and sets the epoch at every pass), ``fabric.backward`` replaces ``loss.backward``. Evaluation is
the baseline's, after every epoch, on the Fabric-sharded validation loader.

    python bench/peers/fabric_ddp.py --procs 2 --data X.npz --epochs 3 --summary out/summary.json
"""

from __future__ import annotations

from lightning.fabric import Fabric
from torch.utils.data import DataLoader
from workload import (
    arguments,
    cosine,
    datasets,
    model_for,
    set_threads,
    sgd,
    train_loop,
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

    clock, val_loss, val_acc = train_loop(model, optimizer, scheduler, train_loader, val_loader,
                                          fabric.backward, args.epochs)
    write_summary(clock, net, args.epochs, val_loss, val_acc, args.summary)


if __name__ == "__main__":
    main()
