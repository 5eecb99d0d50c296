"""The peers' workload under Hugging Face accelerate: the baseline's loop with ``Accelerator``.

Started by ``accelerate launch --multi_gpu --num_processes N`` (its torchrun-based launcher; the
``--cpu`` flag instead runs one process unless MPI is set up), with ``Accelerator(cpu=True)``, which
makes it a multi-CPU job on gloo. ``prepare`` wraps the model in DDP and shards the training
loader its own way: whole batches of one shuffled order, dealt to the ranks in turn, not the
baseline's ``DistributedSampler`` order, so the final weights differ from the baseline's. The
schedule is not prepared: a prepared one steps once per process at every optimizer step (it
assumes a schedule counted in single-process steps); stepped here, it follows the baseline's
curve. Evaluation is the baseline's, on the baseline's sharding of the validation set.

    accelerate launch --multi_gpu --num_processes 2 bench/peers/accelerate_ddp.py --data X.npz \\
        --epochs 3 --summary out/summary.json
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import set_seed
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
    args = arguments(__doc__.splitlines()[0]).parse_args()
    accelerator = Accelerator(cpu=True)
    set_threads(accelerator.num_processes)  # one node: every process is local
    set_seed(args.seed)
    train_set, val_set = datasets(args.data)
    net = model_for(train_set)
    model, optimizer, train_loader = accelerator.prepare(
        net, sgd(net.parameters()), DataLoader(train_set, batch_size=args.batch_size, shuffle=True))
    scheduler = cosine(optimizer, args.epochs * len(train_loader))
    val_loader = DataLoader(val_set, batch_size=args.batch_size,
                            sampler=range(accelerator.process_index, len(val_set),
                                          accelerator.num_processes))

    clock, val_loss, val_acc = train_loop(model, optimizer, scheduler, train_loader, val_loader,
                                          accelerator.backward, args.epochs)
    write_summary(clock, net, args.epochs, val_loss, val_acc, args.summary)


if __name__ == "__main__":
    main()
